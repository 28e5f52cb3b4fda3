"""``microdiff predict``: apply a model bundle to image files and folders.

For every input ``NAME.ext`` writes ``OUT/NAME_mean.tif`` and ``OUT/NAME_std.tif``: float32
ImageJ TIFFs in the input's intensity units, with the input's pixel size divided by the
model's scale factor (Fiji shows the right scale bar). Optionally ``NAME_samples.tif``
(the K posterior samples as a stack) and ``NAME_schedule.tif`` (the learned-schedule map
γ(t = 0.5, x)). A calibrated model (``microdiff calibrate``) writes the calibrated std as
``NAME_std.tif``, its interval as ``NAME_lower.tif`` and ``NAME_upper.tif``, and on request
the samples' raw spread as ``NAME_std_uncalibrated.tif``. Existing outputs are never
replaced unless ``overwrite``. Progress: one bar over the files and one over the current
file's network calls (every plane of a stack), with the time left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .data.axes import STACK_MODES, as_2d
from .data.io import IMAGE_SUFFIXES, Image, ImageWriteError, image_stem, read_image, shared_stem, write_image
from .devices import resolve_device
from .distributed import World
from .errors import UserError
from .predictor import Prediction, load, predict_planes


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted); a file named twice
    (given and inside a given folder) once."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    first: dict[Path, Path] = {}
    for f in files:
        first.setdefault(f.resolve(), f)
    return list(first.values())


def _refuse_shared_names(files: list[Path]) -> None:
    """Two inputs with one name (``a.tif`` in two folders, ``a.tif`` and ``a.png``) would write
    the same outputs: refused before anything is predicted."""
    if shared := shared_stem(files):
        raise UserError(f"{shared[0]} and {shared[1]} would both write {image_stem(shared[1])}_mean.tif; "
                        "rename one or predict them into different --out folders")


def output_image(res: Prediction, kind: str, axes: str, z_spacing: float | None = None) -> Image:
    """One output of ``res`` (``kind``: mean, std, samples, schedule) as an :class:`Image`
    for ImageJ: ``YX``/``CYX`` (a phase map from a ``CYX`` stack is ``YX``), planes
    predicted one by one stay ``ZYX`` with the input's Z spacing, samples are a ``Z``
    stack labelled ``sample k``."""
    mean_axes = axes[-res.mean.ndim:]
    if kind == "samples":
        k = res.samples.shape[0]
        channels = res.samples.shape[1] if mean_axes == "CYX" else 1
        labels = [f"sample {i + 1}" for i in range(k) for _ in range(channels)]
        return Image(res.samples, ("Z" if mean_axes == "YX" else "ZC") + "YX", res.pixel_size_um,
                     labels=labels)
    data = {"mean": res.mean, "std": res.std, "schedule": res.schedule, "lower": res.lower,
            "upper": res.upper, "std_uncalibrated": res.std_raw}[kind]
    return Image(data, mean_axes, res.pixel_size_um, z_spacing if mean_axes == "ZYX" else None)


@contextmanager
def network_bar(name: str, axes: str, planes: int, enabled: bool
                ) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar over one file's network calls (all planes of a stack, all tiles and
    sampling steps), with rate and time left; yields the ``progress(done, total)`` callback
    of :meth:`Predictor.predict` (None when ``enabled`` is false)."""
    if not enabled:
        yield None
        return
    what = f"{name} ({planes} planes)" if axes == "ZYX" else name
    with tqdm(desc=what, unit="call", leave=False, dynamic_ncols=True) as bar:
        def on_progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)
            if done == total:  # show the finished count whatever the refresh interval skipped
                bar.refresh()

        yield on_progress


def predict_files(model: Path, inputs: list[Path], out: Path, samples: int | None = None,
                  steps: int | None = None, seed: int = 0, tile: int | None = None,
                  overlap: int | None = None, overwrite: bool = False, progress: bool = True,
                  save_samples: bool = False, save_schedule: bool = False, device: str = "cpu",
                  tile_batch: int = 1, stack: str | None = None, save_raw_std: bool = False,
                  bf16: bool = True) -> list[Path]:
    """Predict every input on ``device`` (``cpu``, ``cuda``, ``auto``; ``bf16``: autocast on
    CUDA); returns the paths written (by this process).

    Under ``torchrun`` the files are dealt to the ranks in turn (each rank on its own GPU
    with ``cuda``); each file's output depends only on the file and ``seed``, so it is
    byte-identical to one process on the same kind of device."""
    world, created = distributed.start("cpu")  # gloo: the ranks only meet at barriers
    try:
        dev = resolve_device(device)
        return _predict_files(model, inputs, out, samples, steps, seed, tile, overlap, overwrite,
                              progress and world.is_main, save_samples, save_schedule, world,
                              distributed.local_device(dev, world), tile_batch, stack, save_raw_std,
                              bf16)
    finally:
        distributed.stop(created)


def _predict_files(model: Path, inputs: list[Path], out: Path, samples: int | None, steps: int | None,
                   seed: int, tile: int | None, overlap: int | None, overwrite: bool, progress: bool,
                   save_samples: bool, save_schedule: bool, world: World,
                   device: torch.device, tile_batch: int, stack: str | None,
                   save_raw_std: bool = False, bf16: bool = True) -> list[Path]:
    if stack is not None and stack not in STACK_MODES:
        raise UserError(f"--stack {stack!r}: use one of {', '.join(STACK_MODES)}")
    if stack == "slices" and (save_samples or save_schedule):  # before any file is written
        raise UserError("--stack slices writes mean and std stacks only; "
                        "drop --save-samples and --save-schedule")
    predictor = load(model, device, bf16)
    cal = predictor.bundle.calibration if predictor.model.generative else None
    if save_raw_std and cal is None:
        raise UserError("--raw-std: this model's std is not calibrated (microdiff calibrate), "
                        "NAME_std.tif is already the samples' spread")
    calibrated = ["lower", "upper"] * (cal is not None and cal.interval_factor is not None)
    files = collect_inputs(inputs)
    _refuse_shared_names(files)
    targets = []
    for f in files:
        stem = image_stem(f)
        kinds = (["mean", "std"] + calibrated + ["std_uncalibrated"] * save_raw_std
                 + ["samples"] * save_samples + ["schedule"] * save_schedule)
        paths = {k: out / f"{stem}_{k}.tif" for k in kinds}
        clash = [p for p in paths.values() if p.exists()]
        if clash and not overwrite:
            raise ImageWriteError(f"{clash[0]} exists; use --overwrite to replace it")
        targets.append(paths)
    world.barrier()  # every rank has checked for existing outputs before any is written
    mine = list(zip(files, targets, strict=True))[world.rank::world.size]
    written: list[Path] = []
    for f, paths in tqdm(mine, desc="predicting", unit="file", disable=not progress, dynamic_ncols=True):
        img = read_image(f)
        try:
            data, axes = as_2d(img, stack)
            kwargs = dict(samples=samples, steps=steps, seed=seed, tile=tile, overlap=overlap,
                          pixel_size_um=img.pixel_size, return_samples=save_samples,
                          return_schedule=save_schedule, tile_batch=tile_batch)
            with network_bar(f.name, axes, len(data), progress) as on_progress:
                if axes == "ZYX":  # plane by plane, each with the same seed
                    res = predict_planes(predictor, data, progress=on_progress, **kwargs)
                else:
                    res = predictor.predict(data, axes=axes, progress=on_progress, **kwargs)
        except UserError as err:  # say which file
            raise type(err)(f"{f}: {err}") from None
        for kind, path in paths.items():
            write_image(path, output_image(res, kind, axes, img.z_spacing), overwrite=overwrite)
            written.append(path)
    world.barrier()
    return written
