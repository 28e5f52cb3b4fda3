"""Prediction on images of any size, with uncertainty, in physical units.

``microdiff.load(MODEL)`` returns a :class:`Predictor`. ``predict`` normalises the image
as the model's task did in training (super-resolution: by its own percentiles, then
bicubic upsampling by the scale factor; QPI: the stack's min and max), samples K posterior
samples tile by tile (overlapping tiles, smooth blending), and returns the posterior mean
and std in the input's intensity units (super-resolution, with the same percentiles) or
in radians (QPI).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Bundle, load_bundle
from .data.axes import as_chw
from .data.normalize import Normalizer
from .data.synthetic import upsample
from .data.tiling import apply_tiled, tile_starts
from .devices import resolve_device
from .errors import ShapeError, UserError, check_finite
from .intensity_calibration import IntensityCalibration
from .models import ImageModel


@dataclass
class Prediction:
    """mean, std: ``[H·s, W·s]`` (or ``[C, H·s, W·s]``) float32 in input units (rad for QPI);
    pixel_size_um: the input's pixel size divided by the scale factor (None if unknown)."""

    mean: np.ndarray
    std: np.ndarray
    pixel_size_um: float | None
    samples: np.ndarray | None = None
    """``[K, H·s, W·s]`` (or ``[K, C, ...]``) posterior samples in input units, when asked."""
    std_raw: np.ndarray | None = None
    """The uncalibrated std (the K samples' spread) when ``std`` is calibrated, else None."""
    lower: np.ndarray | None = None
    """Lower end of the conformal interval (the bundle's calibration), else None."""
    upper: np.ndarray | None = None
    """Upper end of the interval, else None."""
    schedule: np.ndarray | None = None
    """The learned-schedule map γ(t = 0.5, x) on the output grid, when asked: the fraction of
    signal a pixel keeps half-way through the forward process (lower: drowned in noise
    earlier)."""


class Predictor:
    """A loaded model plus what is needed to apply it to raw images (its :class:`Bundle`)."""

    def __init__(self, model: ImageModel, bundle: Bundle | dict, bf16: bool = True) -> None:
        bundle = Bundle.from_dict(bundle) if isinstance(bundle, dict) else bundle  # bundle.json's mapping
        self.model, self.bundle = model, bundle
        self.bf16 = bf16
        """Run the networks under bf16 autocast on CUDA (no effect on a CPU); off: float32."""
        self.scale = bundle.scale
        self.percentiles = bundle.percentiles
        self.task = bundle.task
        self.in_channels = bundle.image_channels  # of the images given (the model may add a baseline)

    def _check(self, image: np.ndarray, axes: str) -> np.ndarray:
        chw = as_chw(image, axes)
        if chw.shape[0] != self.in_channels:
            raise ShapeError(f"the model expects {self.in_channels} input channel(s), "
                             f"the image has {chw.shape[0]}"
                             + (" (an RGB image: save it as one channel, YX)" if axes == "CYX"
                                and self.in_channels == 1 and chw.shape[0] in (3, 4) else ""))
        check_finite(chw)
        return chw

    def condition(self, image: np.ndarray, axes: str = "YX") -> tuple[torch.Tensor, Normalizer]:
        """The model's condition ``x`` ``[C, H·s, W·s]`` (normalised, upsampled) and the
        normaliser fitted on ``image``."""
        chw = self._check(image, axes)
        norm = self.task.fit_input(chw, self.percentiles)
        x = torch.from_numpy(norm.normalize(chw, channel_axis=0))
        return self.task.condition(upsample(x[None], self.scale)[0] if self.scale > 1 else x), norm

    @torch.no_grad()
    def predict(
        self,
        image: np.ndarray,
        axes: str = "YX",
        samples: int | None = None,
        steps: int | None = None,
        seed: int = 0,
        tile: int | None = None,
        overlap: int | None = None,
        pixel_size_um: float | None = None,
        return_samples: bool = False,
        return_schedule: bool = False,
        tile_batch: int = 1,
        progress: Callable[[int, int], None] | None = None,
        calibrated: bool = True,
    ) -> Prediction:
        """Posterior mean and std of ``image`` (``axes`` ``"YX"`` or ``"CYX"``).

        ``samples``/``steps``/``tile``/``overlap`` default to the bundle's sampling config
        (:meth:`tiling`); ``tile`` and ``overlap`` are on the output (target) grid; equal
        ``seed`` ⇒ equal output.
        ``return_samples`` adds the K samples, ``return_schedule`` the γ(0.5, x) map.
        ``tile_batch`` tiles (× K samples) go through the network together: faster on a
        GPU, more memory; the output depends on it (the random draws are shared differently).
        ``progress(done, total)`` is called after each network step (sampling steps × tile
        batches), e.g. to drive a progress bar. When the bundle holds a calibration and
        ``calibrated`` (default), ``std`` is the calibrated std (``std_raw`` the samples'
        spread) and ``lower``/``upper`` the conformal interval; a calibration with an
        intensity correction also sets ``mean`` (and ``samples``) to the corrected estimate.
        """
        tile, overlap = self.tiling(tile, overlap)
        _check_options(samples, steps, tile_batch, tile, overlap)
        self.warn_pixel_size(pixel_size_um)
        if return_schedule and not self.model.generative:
            raise UserError("this model is a regression baseline: it has no learned schedule to save")
        x, norm = self.condition(image, axes)
        samples = self.bundle.sample.samples if samples is None else samples
        steps = steps or self.bundle.sample.steps
        out = self.predict_normalized(x, samples, steps, seed, tile, overlap, return_samples, return_schedule,
                                      tile_batch, progress)
        cal = self.bundle.calibration if calibrated and self.model.generative else None
        if cal is not None:
            if cal.spread_differs(samples, steps, self.bundle.sample.uncertainty):
                warnings.warn(f"the std was calibrated for {cal.samples} samples × {cal.steps} steps; "
                              f"predicting with {samples} × {steps} changes its spread (recalibrate with "
                              "microdiff calibrate for these settings)", stacklevel=3)
            out["std_raw"] = out["std"]
            if cal.intensity is not None:
                out = _intensity_corrected(cal.intensity, out)
            out["std"] = cal.std.apply(out["std"]).astype(np.float32)
            if cal.interval_factor is not None:
                lower, upper = cal.interval(out["mean"], out["std"])
                out["lower"], out["upper"] = lower.astype(np.float32), upper.astype(np.float32)
        return self._prediction(out, norm, samples, axes, pixel_size_um)

    def warn_pixel_size(self, pixel_size_um: float | None) -> None:
        """Warn when the image's pixel size (µm) is more than 10 % off the one the model was
        trained on (both known): the network then sees every structure at another size."""
        trained = self.bundle.pixel_size_um
        if pixel_size_um and trained and abs(pixel_size_um / trained - 1) > 0.1:
            warnings.warn(f"the image's pixel size is {pixel_size_um:.4g} µm, the model was trained on "
                          f"{trained:.4g} µm: it sees every structure at {trained / pixel_size_um:.2g}× "
                          f"its size in training (resample the image to {trained:.4g} µm)", stacklevel=3)

    def tiling(self, tile: int | None = None, overlap: int | None = None) -> tuple[int, int]:
        """The tile side and overlap (output pixels) the networks run in: the bundle's
        ``sample.tile`` / ``sample.overlap`` where not given (a given ``tile`` at or below the
        bundle's overlap gets an overlap of ``tile // 4``)."""
        s = self.bundle.sample
        tile = s.tile if tile is None else tile
        if overlap is None:
            overlap = s.overlap if s.overlap < tile else tile // 4
        return tile, overlap

    @property
    def one_pass(self) -> bool:
        """Whether the model can predict with ``samples=0``: its point estimate is the mean
        network and its std the variance head, so neither needs samples."""
        s = self.bundle.sample
        return self.model.generative and (s.point_estimate, s.uncertainty) == ("mean-net", "head")

    def check_one_pass(self, return_samples: bool, refine: bool) -> None:
        """``samples=0`` (no sampling loop) needs :attr:`one_pass` and no sample-based output."""
        if not self.one_pass:
            raise UserError("samples 0 (one pass, no sampling) needs a model whose point estimate is the "
                            "mean network and whose std is the variance head "
                            "(sample.point_estimate=mean-net, sample.uncertainty=head)")
        if return_samples:
            raise UserError("samples 0 draws no samples to save; ask for at least 1")
        if refine:
            raise UserError("this task's data-consistency step refines samples; predict with at least 1")

    @torch.no_grad()
    def sample_normalized(self, x: torch.Tensor, samples: int, steps: int, seed: int = 0,
                          tile: int | None = None, overlap: int | None = None, return_samples: bool = False,
                          return_schedule: bool = False,
                          tile_batch: int = 1, progress: Callable[[int, int], None] | None = None
                          ) -> dict[str, np.ndarray]:
        """The model on a condition ``x`` ``[C, H, W]`` (normalised, on the output grid), tile
        by tile: ``mean`` and ``std`` ``[C, H, W]`` in normalised target units (uncalibrated),
        plus ``samples`` ``[K·C, H, W]`` and ``schedule`` when asked. ``tile``/``overlap``:
        :meth:`tiling`."""
        s = self.bundle.sample
        tile, overlap = self.tiling(tile, overlap)
        device = next(self.model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        n_tiles = len(tile_starts(x.shape[-2], tile, overlap)) * len(tile_starts(x.shape[-1], tile, overlap))
        per_batch = steps if self.model.generative and samples > 0 else 1
        on_step = _step_counter(progress, -(-n_tiles // tile_batch) * per_batch)

        def run(tiles: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.model.sample(tiles.to(device), steps=steps, samples=samples, generator=gen,
                                    **s.options(), on_step=on_step)
            parts = {"mean": out.mean, "std": out.std}
            if return_samples:
                parts["samples"] = out.samples.flatten(1, 2)  # [N, K·C, h, w]
            if return_schedule:
                parts["schedule"] = out.gamma_half.expand_as(out.mean)
            return {k: v.float().cpu() for k, v in parts.items()}

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and self.bf16):
            # networks in bf16 on a GPU; the schedule and sampler arithmetic stay float32; the
            # samples blended across tile overlaps so that they keep their spread
            blended = apply_tiled(run, x, tile=tile, overlap=overlap, batch=tile_batch,
                                  draws={"samples": samples} if return_samples else None)
        return {k: v.numpy() for k, v in blended.items()}

    def predict_normalized(self, x: torch.Tensor, samples: int, steps: int, seed: int = 0,
                           tile: int | None = None, overlap: int | None = None, return_samples: bool = False,
                           return_schedule: bool = False,
                           tile_batch: int = 1, progress: Callable[[int, int], None] | None = None
                           ) -> dict[str, np.ndarray]:
        """:meth:`sample_normalized`, then the task's data-consistency step on the whole image
        (:meth:`refined`) when the task has one: the uncalibrated prediction ``predict`` gives
        and calibration fits, in normalised target units."""
        refine = bool(self.task.data_consistency)
        if samples == 0 and self.model.generative:  # a regression model is one pass whatever K
            self.check_one_pass(return_samples, refine)
        out = self.sample_normalized(x, samples, steps, seed, tile, overlap,
                                     return_samples or (refine and self.model.generative), return_schedule,
                                     tile_batch, progress)
        return self.refined(x, out, samples, return_samples) if refine else out

    def refined(self, x: torch.Tensor, out: dict[str, np.ndarray], samples: int, return_samples: bool
                 ) -> dict[str, np.ndarray]:
        """The task's data-consistency step on the whole image's point estimate and samples
        (:meth:`~microdiff.data.tasks.Task.refine`); the std becomes the refined samples'."""
        mean = torch.from_numpy(out["mean"])[None]
        k = out["samples"].reshape(1, samples, *mean.shape[1:]) if "samples" in out else None
        point, std, k = self.task.refine(x[None], mean, torch.from_numpy(k) if k is not None else None)
        out = {**out, "mean": point[0].numpy()}
        if std is not None:
            out["std"] = std[0].numpy()
        out.pop("samples", None)
        if return_samples and k is not None:
            out["samples"] = k[0].flatten(0, 1).numpy()
        return out

    def _prediction(self, out: dict[str, np.ndarray], norm: Normalizer, samples: int, axes: str,
                    pixel_size_um: float | None) -> Prediction:
        """The blended outputs (normalised ``[C, H, W]``; samples ``[K·C, H, W]``) in physical
        units, with the channel axis dropped where one image went in (``YX``) or one phase
        map came out."""
        mean, std = self.task.output_units(out["mean"], out["std"], norm)
        extra = {}
        for key in ("std_raw", "lower", "upper"):
            if key in out:
                units = self.task.output_units(out[key], out[key], norm)
                extra[key] = units[1] if key == "std_raw" else units[0]
        k_samples = schedule_map = None
        if "samples" in out:
            k = out["samples"].reshape(samples, mean.shape[0], *mean.shape[1:])
            k_samples = self.task.samples_units(k, norm)
        if "schedule" in out:
            schedule_map = out["schedule"]
        if self.task.is_phase or axes == "YX":
            mean, std = mean[0], std[0]
            extra = {k: v[0] for k, v in extra.items()}
            k_samples = k_samples[:, 0] if k_samples is not None else None
            schedule_map = schedule_map[0] if schedule_map is not None else None
        px = pixel_size_um / self.scale if pixel_size_um else None
        return Prediction(mean, std, px, samples=k_samples, schedule=schedule_map, **extra)


def _check_options(samples: int | None, steps: int | None, tile_batch: int, tile: int, overlap: int) -> None:
    if samples is not None and samples < 0:
        raise UserError(f"samples must be at least 0 (0: one pass, for a model with the variance head), "
                        f"got {samples}")
    for name, value in (("steps", steps), ("tile_batch", tile_batch)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if tile < 8 or not 0 <= overlap < tile:
        raise UserError(f"tile must be at least 8 and overlap in [0, tile): got tile {tile}, "
                        f"overlap {overlap}")


def _step_counter(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None] | None:
    """A callback that reports ``progress(done, total)`` after each network step (None: none)."""
    if progress is None:
        return None
    done = [0]

    def on_step() -> None:
        done[0] += 1
        progress(done[0], total)

    return on_step


def predict_planes(predictor: Predictor, planes: np.ndarray,
                   progress: Callable[[int, int], None] | None = None, **kwargs) -> Prediction:
    """A Z stack ``[Z, H, W]`` predicted plane by plane, each with the same seed (``kwargs``
    as :meth:`Predictor.predict`); mean and std ``[Z, H·s, W·s]``; ``progress(done, total)``
    over all planes (no samples or schedule map: asking for them is refused)."""
    if kwargs.get("return_samples") or kwargs.get("return_schedule"):
        raise UserError("a stack predicted plane by plane gives mean and std stacks only; "
                        "predict a plane on its own for its samples or schedule map")
    results, n = [], len(planes)
    for i, plane in enumerate(planes):
        def plane_progress(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress(i * total + done, n * total)

        results.append(predictor.predict(plane, axes="YX", progress=plane_progress, **kwargs))
    extra = {k: np.stack([getattr(r, k) for r in results]) for k in ("std_raw", "lower", "upper")
             if getattr(results[0], k) is not None}
    return Prediction(np.stack([r.mean for r in results]), np.stack([r.std for r in results]),
                      results[0].pixel_size_um, **extra)


def load(folder: str | Path, device: str | torch.device = "cpu", bf16: bool = True) -> Predictor:
    """Load an inference bundle (see :mod:`microdiff.checkpoint`) as a :class:`Predictor`
    on ``device`` (``cpu``, ``cuda``, ``cuda:1``; ``auto``: CUDA when available). Equal
    seeds give equal outputs on one device; CPU and GPU outputs differ by float rounding.
    ``bf16``: the networks under bf16 autocast on CUDA (:attr:`Predictor.bf16`)."""
    return Predictor(*load_bundle(folder, str(resolve_device(device))), bf16=bf16)


def _intensity_corrected(ic: IntensityCalibration, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``out`` (``mean``, ``std`` ``[C, H, W]``, optional ``samples`` ``[K·C, H, W]``, normalised
    units) with each channel's per-image gain and offset applied (``std_raw`` kept as is)."""
    out = dict(out)
    mean, std = out["mean"].copy(), out["std"].copy()
    n_ch = mean.shape[0]
    samples = out.get("samples")
    samples = None if samples is None else samples.copy()
    for c in range(n_ch):
        k = None if samples is None else samples[c::n_ch]
        mean[c], std[c], k = ic.apply(mean[c], std[c], k)
        if samples is not None:
            samples[c::n_ch] = k
    out["mean"], out["std"] = mean, std
    if samples is not None:
        out["samples"] = samples
    return out
