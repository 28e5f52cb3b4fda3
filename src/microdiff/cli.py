"""Command line: ``microdiff demo``, ``train``, ``simulate``, ``predict``, ``evaluate`` and
``export``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Conditional Variational Diffusion Models for microscopy inverse problems.")


_DEBUG = False


@app.callback()
def _root(debug: Annotated[bool, typer.Option(
        "--debug", help="show the full traceback of an error (before the command)")] = False) -> None:
    """microdiff command line."""
    global _DEBUG
    _DEBUG = debug


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("demo-run"),
    steps: Annotated[int | None, typer.Option(help="training steps (default: the preset's)")] = None,
    config: Annotated[str, typer.Option(help="preset name or YAML file")] = "demo",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. train.steps=30")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Simulate data, train a small CVDM, and compare it with bicubic upsampling on held-out images."""
    from .config import apply_overrides, load_config
    from .demo import run_demo

    cfg = apply_overrides(load_config(config), set_ or [])
    if steps is not None:
        if steps < 1:
            raise UserError("--steps must be at least 1")
        cfg.train.steps = steps
    run_demo(out, cfg, progress=not quiet)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="run folder (config.yaml, stats.jsonl, checkpoints/, model/)")],
    config: Annotated[str | None, typer.Option(
        help="preset name or YAML file (default: the run's config.yaml with --resume, else demo)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. train.steps=30")] = None,
    resume: Annotated[bool, typer.Option(
        help="continue the run in --out from its latest checkpoint")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train a model: from a paired data folder (--set data.path=DIR) or the simulator."""
    from .config import apply_overrides, load_config
    from .data.sources import task_of
    from .runs import train_run

    if config is None:
        saved = out / "config.yaml"
        config = str(saved) if resume and saved.is_file() else "demo"
    cfg = apply_overrides(load_config(config), set_ or [])
    result = train_run(cfg, out, resume=resume, progress=not quiet)
    f = result.final
    if not f:  # a torchrun rank other than 0: rank 0 reports
        return
    base = task_of(cfg.data).baseline_name
    versus = ((f" ({base} {f['val_psnr_baseline']:.2f})", f" ({base} {f['val_ssim_baseline']:.3f})")
              if base else ("", ""))
    print(f"validation ({len(result.data.val)} held-out, {cfg.sample.steps} steps x "
          f"{cfg.sample.samples} samples): PSNR {f['val_psnr']:.2f} dB{versus[0]}, SSIM {f['val_ssim']:.3f}"
          f"{versus[1]}")
    print(f"model: {out / 'model'}   (microdiff predict {out / 'model'} IMAGES --out DIR)")


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="output folder (gets input/, target/, manifest.json)")],
    task: Annotated[str, typer.Option(
        help="sr (widefield -> SIM), qpi-2shot (defocus pair -> phase), qpi-poly (RGB -> phase)")] = "sr",
    structure: Annotated[str, typer.Option(help="mt, factin, ccp, er or mixed")] = "mixed",
    n: Annotated[int, typer.Option(help="number of pairs")] = 16,
    size: Annotated[int, typer.Option(help="target size in pixels (sr input: size / 2)")] = 256,
    level: Annotated[int | None, typer.Option(help="sr: signal level 1..9 (default: drawn)")] = None,
    source: Annotated[str, typer.Option(
        help="qpi: phase maps from natural (scikit-image's sample images), structures, cells or "
        "natural+cells")] = "natural",
    phase_range: Annotated[float, typer.Option(help="qpi: phase range in rad (the paper: 3.5)")] = 3.5,
    raw: Annotated[bool, typer.Option(
        help="qpi: raw intensities (unit illumination) instead of min-max normalised stacks "
             "(for models with data.qpi_input_norm=mean)")] = False,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace existing files")] = False,
) -> None:
    """Simulate paired data as TIFFs with pixel sizes: BioSR-like widefield/SIM pairs, or
    defocused intensities and their phase (QPI)."""
    from .data.simulate_files import write_qpi_pairs, write_simulated_pairs

    if task == "sr":
        write_simulated_pairs(out, structure, n, size, level, seed, overwrite=overwrite)
    else:
        write_qpi_pairs(out, task, n, size, source, structure, seed, phase_range, overwrite=overwrite,
                        raw=raw)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="model folder (inference bundle)")],
    inputs: Annotated[list[Path], typer.Argument(help="image files or folders (TIFF/MRC/PNG)")],
    out: Annotated[Path, typer.Option(help="output folder")],
    samples: Annotated[int | None, typer.Option(help="posterior samples K (default: the model's)")] = None,
    steps: Annotated[int | None, typer.Option(help="sampling steps (default: the model's)")] = None,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same output)")] = 0,
    tile: Annotated[int | None, typer.Option(
        help="tile size on the output grid (default: the model's sample.tile, 256 unless its preset "
             "sets one)")] = None,
    overlap: Annotated[int | None, typer.Option(
        help="tile overlap in output pixels (default: the model's sample.overlap)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing outputs")] = False,
    save_samples: Annotated[bool, typer.Option(help="also write NAME_samples.tif (the K samples)")] = False,
    save_schedule: Annotated[bool, typer.Option(
        help="also write NAME_schedule.tif (the learned-schedule map γ(0.5, x))")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (CUDA when available)")] = "auto",
    tile_batch: Annotated[int, typer.Option(
        help="tiles sampled together (faster on a GPU, more memory; changes the random draws)")] = 1,
    stack: Annotated[str | None, typer.Option(
        help="Z-stacks: slices (each plane) or mean (their mean, e.g. raw SIM frames)")] = None,
    raw_std: Annotated[bool, typer.Option(
        help="calibrated models: also write NAME_std_uncalibrated.tif (the samples' spread)")] = False,
    bf16: Annotated[bool, typer.Option(
        help="CUDA: run the networks under bf16 autocast (--no-bf16: float32 throughout; "
             "no effect on a CPU)")] = True,
) -> None:
    """Predict NAME_mean.tif and NAME_std.tif (input units, pixel size / scale) for each image;
    NAME_lower.tif and NAME_upper.tif (the interval) for a calibrated model."""
    from .predict_files import predict_files

    written = predict_files(model, inputs, out, samples=samples, steps=steps, seed=seed, tile=tile,
                            overlap=overlap, overwrite=overwrite, save_samples=save_samples,
                            save_schedule=save_schedule, device=device, tile_batch=tile_batch,
                            stack=stack, save_raw_std=raw_std, bf16=bf16)
    from .distributed import world_from_env

    world = world_from_env()
    rank = f"rank {world.rank}: " if world.distributed else ""
    print(f"{rank}wrote {len(written)} files to {out}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="model folder (inference bundle)")],
    data: Annotated[Path, typer.Argument(help="paired data folder (input/, target/)")],
    out: Annotated[Path, typer.Option(help="output folder for metrics.csv and summary.md")],
    samples: Annotated[int | None, typer.Option(help="posterior samples K (default: the model's)")] = None,
    steps: Annotated[int | None, typer.Option(help="sampling steps (default: the model's)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    baseline: Annotated[list[str] | None, typer.Option(
        help="classical baselines to add: bicubic (default), richardson-lucy")] = None,
) -> None:
    """Metrics of the model and of classical baselines against the targets of DATA."""
    from .evaluate_files import evaluate_folder

    evaluate_folder(model, data, out, samples=samples, steps=steps, seed=seed,
                    baselines=tuple(baseline or ["bicubic"]))
    print(f"wrote {out / 'metrics.csv'} and {out / 'summary.md'}")


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="model folder (inference bundle): bundle.json is updated")],
    data: Annotated[Path, typer.Argument(help="held-out paired data folder (input/, target/), never "
                                             "training files")],
    samples: Annotated[int | None, typer.Option(help="posterior samples K (default: the model's)")] = None,
    steps: Annotated[int | None, typer.Option(help="sampling steps (default: the model's)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    alpha: Annotated[float, typer.Option(help="interval: allowed fraction of pixels outside it")] = 0.1,
    delta: Annotated[float, typer.Option(help="interval: allowed chance that the promise fails")] = 0.1,
    tile: Annotated[int, typer.Option(help="side of the calibration tiles (output pixels)")] = 32,
    unit: Annotated[str | None, typer.Option(help="interval units: tile, image (a per-image promise; "
                                                   "needs 9 images at delta 0.1 and can be very wide), or "
                                                   "auto (images when there are 9); default: auto for a "
                                                   "variance-head std, tile for the samples' spread")] = None,
    form: Annotated[str, typer.Option(help="std map: scale (std → k·std, stable on few images), affine "
                                            "(std → a·std + b), binned (a monotone curve through ten "
                                            "bins of the std; on its own it wants many images) or auto "
                                            "(binned after --intensity's gain, else scale)")] = "auto",
    intensity: Annotated[bool, typer.Option(help="also fit the estimate's per-image gain and offset "
                                                 "(opt-in; needs 32 or more held-out images; see the "
                                                 "guide)")] = False,
) -> None:
    """Fit the std calibration and the conformal interval on held-out pairs and store
    them in the model (used by predict, evaluate, napari and export)."""
    from .calibrate_files import calibrate_folder
    from .intensity_calibration import MIN_IMAGES

    cal = calibrate_folder(model, data, samples, steps, seed, alpha, delta, tile, unit=unit, form=form,
                           intensity=intensity)
    units = f"{cal.units} images" if cal.unit == "image" else f"{cal.units} tiles of {cal.tile}²"
    print(f"calibrated {model} on {cal.images} image(s) of {data} ({cal.pixels} pixels, {units}, "
          f"{cal.describe_draws()}): std → {cal.describe_map()}; ±1σ coverage {cal.coverage_before:.3f} → "
          f"{cal.coverage_after:.3f} (0.683 if Gaussian)")
    print(cal.promise() + ("" if cal.interval_factor is not None
                           else "; calibrate on more images or use a smaller --tile"))
    if intensity:
        print("the estimate's per-image gain and offset: " + (
            f"fitted on {cal.intensity.images} images" if cal.intensity is not None
            else f"not fitted ({cal.images} images; it needs {MIN_IMAGES})"))


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="model folder (inference bundle)")],
    out: Annotated[Path, typer.Option(help="the package to write (.zip)")],
    format_: Annotated[str, typer.Option("--format", help="bioimageio (BioImage Model Zoo, spec 0.5)")]
    = "bioimageio",
    samples: Annotated[int | None, typer.Option(
        help="posterior samples K (default: the model's; 0: one pass, with the variance head)")] = None,
    steps: Annotated[int | None, typer.Option(help="sampling steps (default: the model's)")] = None,
    seed: Annotated[int, typer.Option(help="random seed of the packaged prediction")] = 0,
    test_image: Annotated[Path | None, typer.Option(
        help="test input (default: simulated for the model's task)")] = None,
    name: Annotated[str | None, typer.Option(help="model name in the Zoo")] = None,
    author: Annotated[list[str] | None, typer.Option(help="author name (repeat for several)")] = None,
    cite_url: Annotated[str | None, typer.Option(
        help="where to cite this model (your paper or repository)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing package")] = False,
) -> None:
    """Package a model for the BioImage Model Zoo (deterministic posterior mean and std)."""
    from .export_bioimageio import FORMATS, export_bioimageio

    if format_ not in FORMATS:
        raise UserError(f"--format {format_!r}: use one of {', '.join(FORMATS)}")
    path = export_bioimageio(model, out, samples=samples, steps=steps, seed=seed, test_image=test_image,
                             name=name, authors=author, cite_url=cite_url, overwrite=overwrite)
    print(f"wrote {path}; check it with: bioimageio test {path}")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (``--debug``:
    with the traceback); warnings one line each (``warning: ...``)."""
    warnings.showwarning = _one_line_warning
    try:
        app()
    except UserError as err:
        if _DEBUG:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
