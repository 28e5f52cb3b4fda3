"""What differs between inverse problems at the data boundary: how raw arrays become
normalised pairs, how the model's output returns to physical units, the names of channels
and units, the classical baseline and a simulated test input. The diffusion code never
sees any of it, and consumers (prediction, evaluation, export, napari) ask the
:class:`Task` instead of branching on its name.

- ``sr`` (super-resolution, the default): input and target percentile-normalised per
  channel (CSBDeep), the condition is the input bicubic-upsampled to the target grid, the
  output returns to the *input's* intensity units; baseline: bicubic; metrics after CARE's
  affine intensity matching.
- ``qpi-2shot`` / ``qpi-poly`` (quantitative phase): the input is a stack of intensities
  (2 defocused shots / 3 colour channels) on the target's grid, min-max normalised as a
  whole (the CVDM paper's convention; ``input_norm="mean"``: divided by the stack's mean,
  which keeps the contrast (I₊ − I₋)/I₀ that sets the phase's scale, lost by min-max);
  the target is phase in radians, mapped to [0, 1] by the fixed ``phase_range``, so the
  output returns in radians whatever the input's scale; baseline: TIE (two-shot only);
  metrics in radians after removing the mean phase (no method can know it from intensities).
  With ``baseline_channel`` (qpi-2shot, mean-normalised input) the condition gains a last
  channel: the TIE phase of the whole image in target units (φ_TIE / ``phase_range``), so
  a residual model learns the correction to the physics, and every patch carries the low
  frequencies TIE integrates from the whole field. ``tie_extra_regularizations`` adds TIE
  at more Tikhonov weights before it (one channel each): a weakly regularised TIE keeps the
  low frequencies a smooth object needs, a strongly regularised one is robust to noise, and
  the network weighs them pixel by pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ShapeError
from ..options import INPUT_NORMS, TASKS, choose
from .normalize import PERCENTILES, Normalizer

#: input channel names of the phase tasks (their channel count is fixed)
QPI_CHANNEL_NAMES = {"qpi-2shot": ("defocus_minus", "defocus_plus"), "qpi-poly": ("red", "green", "blue")}
DATA_CONSISTENCY = ("", "tie", "tie+wiener")  # off, TIE Gauss-Newton step, then the CTF Wiener step
TEST_SIZE = {False: 32, True: 64}  # side of a simulated test input (is_phase → pixels)


@dataclass(frozen=True)
class Task:
    """``kind`` ∈ :data:`~microdiff.options.TASKS`; ``phase_range``: the target's range in rad
    (QPI); ``input_norm`` ∈ :data:`~microdiff.options.INPUT_NORMS`: how a QPI stack is normalised."""

    kind: str = "sr"
    phase_range: float = 3.5
    input_norm: str = "minmax"
    baseline_channel: bool = False
    tie_regularization: float | str = 1e-3  # or "auto": from the pair's noise
    tie_extra_regularizations: tuple[float, ...] = ()
    data_consistency: bool | str = False  # towards the intensities: tie+wiener (= True), tie, off

    def __post_init__(self) -> None:
        choose(self.kind, TASKS, "task")
        choose(self.input_norm, INPUT_NORMS, "input_norm")
        if self.baseline_channel and (self.kind != "qpi-2shot" or self.input_norm != "mean"):
            raise ValueError("the baseline channel needs task qpi-2shot with input_norm=mean")
        if isinstance(self.tie_regularization, str) and self.tie_regularization != "auto":
            raise ValueError(f"tie_regularization is a weight > 0 or 'auto', not {self.tie_regularization!r}")
        consistency = self.data_consistency
        consistency = {True: "tie+wiener", False: "", None: ""}.get(consistency, consistency)
        if consistency not in DATA_CONSISTENCY:
            raise ValueError(f"data_consistency is one of {DATA_CONSISTENCY} or a bool, not {consistency!r}")
        object.__setattr__(self, "data_consistency", consistency)
        if (self.tie_extra_regularizations or self.data_consistency) and not self.baseline_channel:
            raise ValueError("extra TIE channels and data consistency need the baseline channel")
        object.__setattr__(self, "tie_extra_regularizations",  # a list from a bundle's JSON
                           tuple(float(a) for a in self.tie_extra_regularizations))

    @property
    def is_phase(self) -> bool:
        """A phase map (one channel, rad) from a stack of intensities on the same grid."""
        return self.kind != "sr"

    @property
    def target_self_normalised(self) -> bool:
        """Whether each target is normalised by its own statistics (percentiles: sr), so that
        its intensity scale is a per-image unknown the estimate can be corrected for
        (:mod:`microdiff.intensity_calibration`); a phase target keeps its units (rad)."""
        return not self.is_phase

    @property
    def baseline_name(self) -> str | None:
        """The classical method :meth:`baseline` computes (None: there is none)."""
        return {"sr": "bicubic", "qpi-2shot": "tie"}.get(self.kind)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "phase_range": self.phase_range, "input_norm": self.input_norm,
                "baseline_channel": self.baseline_channel, "tie_regularization": self.tie_regularization,
                "tie_extra_regularizations": list(self.tie_extra_regularizations),
                "data_consistency": self.data_consistency}

    @classmethod
    def from_dict(cls, d: dict | None) -> Task:
        return cls(**d) if d else cls()  # bundles from before tasks existed are sr

    # --- names and units ----------------------------------------------------------------
    def channel_names(self, in_channels: int) -> list[str]:
        """Identifiers of the input channels."""
        if self.kind in QPI_CHANNEL_NAMES:
            return list(QPI_CHANNEL_NAMES[self.kind])
        return ["intensity"] if in_channels == 1 else [f"channel{i + 1}" for i in range(in_channels)]

    def output_names(self, out_channels: int) -> list[str]:
        """Identifiers of the output channels."""
        if self.is_phase:
            return ["phase"]
        return ["intensity"] if out_channels == 1 else [f"channel{i + 1}" for i in range(out_channels)]

    @property
    def unit(self) -> str | None:
        """The output's unit (None: the input's intensity units)."""
        return "rad" if self.is_phase else None

    @property
    def title(self) -> str:
        return "quantitative phase imaging" if self.is_phase else "super-resolution"

    def describe(self, scale: int) -> str:
        """What the model does, in one phrase."""
        if self.is_phase:
            return "quantitative phase imaging: defocused intensities in, the phase map (rad) out"
        return f"super-resolution: a widefield image in, a SIM-like image at {scale}× the sampling out"

    def describe_input_norm(self, percentiles: tuple[float, float]) -> str:
        """How an input image is normalised, completing "the model normalises each image ..."."""
        if not self.is_phase:
            return f"by its {percentiles[0]}th and {percentiles[1]}th percentiles"
        if self.input_norm == "mean":
            return "by its mean intensity (the whole stack; give raw intensities, camera offset removed)"
        return "by its minimum and maximum (the whole stack)"

    # --- input ------------------------------------------------------------------------
    def fit_input(self, image: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> Normalizer:
        """The normaliser of an input ``[C, h, w]``: per-channel percentiles (sr), or the
        whole stack's min and max (qpi: one span for all channels keeps their ratios), or
        the stack's mean (qpi, ``input_norm="mean"``: the ratios to I₀ too)."""
        if self.is_phase and self.input_norm == "mean":
            try:
                return Normalizer.mean_scale(image)
            except ValueError:
                raise ShapeError(f"a {self.kind} stack needs a positive mean intensity, "
                                 f"got {float(np.mean(image)):g}") from None
        if self.is_phase:
            return Normalizer.min_max(image)
        return Normalizer.percentiles(image, *percentiles, channel_axis=0)

    @property
    def extra_channels(self) -> int:
        """Channels :meth:`condition` appends to the input's (the TIE channels)."""
        return 1 + len(self.tie_extra_regularizations) if self.baseline_channel else 0

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The model's condition from the normalised input on the target grid ``x``
        ``[C, H, W]``: ``x`` itself, or with ``baseline_channel`` ``x`` and the TIE phase of
        the whole image in target units (φ_TIE / ``phase_range``), first at each of
        ``tie_extra_regularizations``, last (the residual's base) at ``tie_regularization``:
        ``[C + extra_channels, H, W]`` float32."""
        if not self.baseline_channel:
            return x
        alphas = (*self.tie_extra_regularizations, self.tie_regularization)
        ties = [self.baseline(x.numpy(), regularization=a) / self.phase_range for a in alphas]
        return torch.cat([x, torch.from_numpy(np.stack(ties).astype(np.float32))])

    def check_channels(self, channels: int) -> None:
        need = QPI_CHANNEL_NAMES.get(self.kind)
        if need is not None and channels != len(need):
            raise ShapeError(f"task {self.kind} takes {len(need)} input channels, got {channels}")

    def test_input(self, scale: int, in_channels: int, rng: np.random.Generator) -> np.ndarray:
        """A simulated raw input ``[C, Y, X]`` float32 for a model of this task (a test
        tensor: microtubules for sr, a natural-image phase map's intensities for qpi)."""
        size = TEST_SIZE[self.is_phase]
        if not self.is_phase:
            from .synthetic import simulate_pair

            low = np.asarray(simulate_pair("mt", size * scale, rng).low, np.float32)
            return np.repeat(low[None], in_channels, axis=0)
        from .phase_truth import QPIConfig, phase_map, simulate_qpi

        phi, _ = phase_map("natural", size, rng)
        raw = self.input_norm == "mean"  # a mean-normalised model needs raw intensities
        stack, _ = simulate_qpi(phi, QPIConfig(task=self.kind), rng, normalize=not raw)
        return np.asarray(stack, np.float32)

    # --- target -----------------------------------------------------------------------
    def normalize_target(self, target: np.ndarray) -> np.ndarray:
        """``[C, H, W]`` → normalised float32: per-channel percentiles (sr) or φ / range (qpi;
        with the baseline channel, minus its mean first)."""
        if self.is_phase:
            phi = np.asarray(target, np.float64)
            if self.baseline_channel:  # zero mean like TIE: intensities do not determine the mean phase
                phi = phi - phi.mean(axis=(-2, -1), keepdims=True)
            return (phi / self.phase_range).astype(np.float32)
        return Normalizer.percentiles(target, channel_axis=0).normalize(target, channel_axis=0)

    def output_units(self, mean: np.ndarray, std: np.ndarray, input_norm: Normalizer
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The model's posterior mean and std ``[C, H, W]`` (normalised) in physical units:
        the input's intensity units (sr) or radians (qpi)."""
        if self.is_phase:
            return ((mean * self.phase_range).astype(np.float32),
                    (std * self.phase_range).astype(np.float32))
        return (input_norm.denormalize(mean, channel_axis=0),
                input_norm.denormalize_spread(std, channel_axis=0))

    def samples_units(self, samples: np.ndarray, input_norm: Normalizer) -> np.ndarray:
        """Posterior samples ``[K, C, H, W]`` in physical units."""
        if self.is_phase:
            return (samples * self.phase_range).astype(np.float32)
        return np.stack([input_norm.denormalize(s, channel_axis=0) for s in samples])

    def refine(self, x: torch.Tensor, point: torch.Tensor, samples: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Data consistency (``data_consistency``; otherwise the inputs unchanged): the
        model's point estimate ``[B, 1, H, W]`` and samples ``[B, K, 1, H, W]`` (normalised
        target units, whole images) each moved towards the intensities of the condition
        ``x`` ``[B, C, H, W]``: ``tie``, one TIE-preconditioned Gauss-Newton step, weight
        α = gain · σ̂² from the image's noise (:func:`~microdiff.data.phase.tie_data_consistency`:
        the smooth, strong part of the error, where TIE's geometric optics hold); ``tie+wiener``,
        then a Wiener step through the pair's transfer function with the remaining error's
        spectrum estimated from the residual
        (:func:`~microdiff.data.phase_consistency.wiener_data_consistency`: the weak, fine part,
        where TIE's small-angle transfer is wrong). Frequencies the intensities determine
        follow them, the rest keep the network's answer. Returns (point, std of the refined
        samples or None, samples)."""
        if not self.data_consistency:
            return point, None, samples
        from ..sampling import sample_statistics
        from .phase import two_shot_noise
        from .phase_consistency import data_consistency

        pairs = x[:, :2].double().cpu()
        sigmas = [two_shot_noise(p[0], p[1]) for p in pairs]

        def step(phi: torch.Tensor, i: int) -> torch.Tensor:  # [..., H, W] normalised
            out = data_consistency(phi.double().cpu() * self.phase_range, pairs[i, 0], pairs[i, 1],
                                   self.data_consistency, sigmas[i])
            return (out / self.phase_range).to(phi.dtype).to(phi.device)

        point = torch.stack([step(point[i], i) for i in range(len(point))])
        if samples is None:
            return point, None, None
        samples = torch.stack([step(samples[i], i) for i in range(len(samples))])
        return point, sample_statistics(samples)[1], samples

    # --- baseline ---------------------------------------------------------------------
    def baseline(self, x: np.ndarray, pixel_um: float | None = None,
                 regularization: float | None = None) -> np.ndarray | None:
        """The classical answer from the condition ``x`` ``[C, H, W]`` (normalised, on the
        target grid): x itself for sr (bicubic-upsampled input), TIE in rad for qpi-2shot
        (the optics of :class:`~microdiff.data.phase.TwoShotConfig`, Tikhonov weight
        ``regularization``, default ``tie_regularization``, "auto": from the pair's noise,
        :func:`~microdiff.data.phase.adaptive_tie_regularization`; exact in scale for a
        mean-normalised stack, up to an affine change for a min-max normalised one), None
        for qpi-poly."""
        if self.kind == "sr":
            return np.asarray(x[0], np.float64)
        if self.kind == "qpi-2shot":
            from .phase import TwoShotConfig, adaptive_tie_regularization, tie_phase

            cfg = TwoShotConfig()
            t = torch.as_tensor(np.asarray(x, np.float64))
            alpha = regularization or self.tie_regularization
            if alpha == "auto":
                alpha = adaptive_tie_regularization(t[0], t[1])
            return tie_phase(t[0], t[1], cfg.defocus_um, pixel_um or cfg.pixel_um, cfg.wavelength_um,
                             regularization=alpha).numpy()
        return None
