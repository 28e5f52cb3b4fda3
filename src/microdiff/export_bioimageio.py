"""``microdiff export MODEL --format bioimageio``: a BioImage Model Zoo package (spec 0.5).

The package (a ``.zip``) holds ``rdf.yaml``; ``weights.pt``, the state dict of
:class:`microdiff.bioimageio_model.PosteriorMean` (the model with its sampling fixed: seed,
K samples, N steps, so its output is deterministic); that file as the architecture
source; a conda environment naming microdiff; test tensors (``[1, C, Y, X]`` raw input,
the posterior mean and std it gives, ``.npy``); a README with the validation section the
spec asks for; a cover (input | mean | std). Input and output are in physical units (the
model normalises inside), with the pixel size on the spatial axes (output = input / s).

Needs the optional extra ``microdiff[bmz]`` (bioimageio.spec, bioimageio.core).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch

from ._version import __version__
from .checkpoint import Bundle, load_bundle
from .data.axes import as_2d, as_chw
from .data.io import ImageWriteError, read_image
from .data.normalize import PERCENTILES
from .errors import UserError
from .predictor import Predictor

CVDM_DOI = "10.48550/arXiv.2312.02246"
CVDM_CITATION = ("G. della Maggiora, L. A. Croquevielle, N. Deshpande, H. Horsley, T. Heinis, "
                 "A. Yakimovich: Conditional Variational Diffusion Models. ICLR 2024.")
MIN_SIZE, SIZE_STEP, MAX_TEST_SIZE = 16, 8, 128  # input sizes declared: 16 + 8k; test images cropped
FORMATS = ("bioimageio",)
DEFAULT_AUTHOR = "microdiff user"
NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()"
ARCHITECTURE_FILE = "microdiff_posterior_mean.py"


def _need_extra():
    try:
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise UserError("the BioImage Model Zoo export needs the optional extra: "
                        "pip install 'microdiff[bmz]'") from None
    return v0_5


def valid_size(n: int, cap: int = MAX_TEST_SIZE) -> int:
    """The largest input size the package declares (``MIN_SIZE + k·SIZE_STEP``) ≤ min(n, cap)."""
    n = min(n, cap)
    if n < MIN_SIZE:
        raise UserError(f"a test image needs at least {MIN_SIZE} × {MIN_SIZE} pixels, got {n} along one axis")
    return MIN_SIZE + (n - MIN_SIZE) // SIZE_STEP * SIZE_STEP


def _test_input_from_file(path: Path, bundle: Bundle) -> np.ndarray:
    """``[C, Y, X]`` float32 from ``path``, centre-cropped to a size the package declares."""
    chw = as_chw(*as_2d(read_image(path)))
    if chw.shape[0] != bundle.image_channels:
        raise UserError(f"{path}: the model expects {bundle.image_channels} channel(s), "
                        f"the image has {chw.shape[0]}")
    h, w = valid_size(chw.shape[1]), valid_size(chw.shape[2])
    top, left = (chw.shape[1] - h) // 2, (chw.shape[2] - w) // 2
    return np.ascontiguousarray(chw[:, top: top + h, left: left + w])


def _checked_metadata(v, authors: list[str] | None, cite_url: str | None) -> list:
    """The extra citation entries; authors and the URL checked against the spec (one
    sentence on failure, before any slow work)."""
    from pydantic import ValidationError

    for name in authors or [DEFAULT_AUTHOR]:
        try:
            v.Author(name=name)
        except ValidationError:
            raise UserError(f"--author {name!r}: not a valid author name for the Zoo "
                            "(no '/' or '\\')") from None
    if not cite_url:
        return []
    try:
        return [v.CiteEntry(text=f"trained with microdiff {__version__}", url=cite_url)]
    except ValidationError:
        raise UserError(f"--cite-url {cite_url!r}: not an http(s) URL") from None


def _cover(path: Path, x: np.ndarray, mean: np.ndarray, std: np.ndarray, unit: str | None) -> None:
    """input | prediction (mean) | std, 2:1 (the Zoo's cover ratio)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(6, 3), dpi=120)
    titles = ("input", f"mean ({unit})" if unit else "mean", "std (uncertainty)")
    for ax, img, title, cmap in zip(axes, (x[0], mean[0], std[0]), titles, ("gray", "gray", "magma"),
                                    strict=True):
        lo, hi = np.percentile(img, PERCENTILES)
        ax.imshow(img, cmap=cmap, vmin=lo, vmax=max(hi, lo + 1e-9))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _what_mean(bundle: Bundle, options: dict) -> str:
    if bundle.sample.point_estimate == "mean-net":
        return "the prediction of the model's mean network μ(x) (one pass, no sampling noise)"
    return (f"the posterior mean of {options['samples']} samples ({options['steps']} sampling steps, "
            f"seed {options['seed']})")


def _what_std(bundle: Bundle, options: dict) -> str:
    calibrated = ", calibrated on held-out pairs" if bundle.calibration is not None else ""
    if bundle.sample.uncertainty == "head":
        return ("the per-pixel standard deviation predicted by the model's variance head σ(x) "
                f"(one pass){calibrated}")
    return (f"the per-pixel standard deviation over {options['samples']} posterior samples "
            f"({options['steps']} sampling steps, seed {options['seed']}){calibrated}")


def _calibration_note(bundle: Bundle, options: dict) -> str:
    """The README's paragraph on the std's calibration: what was fitted, on what, and what
    the interval promises (the package outputs the std; mean ± λ̂·std is the interval)."""
    cal = bundle.calibration
    if cal is None:
        return ("The std is not calibrated: its scale is the model's own. `microdiff calibrate MODEL DATA` "
                "fits a calibration on held-out pairs; export again afterwards.")
    lines = [f"The std is calibrated (microdiff `calibrate`, {cal.date}) on {cal.images} held-out images "
             f"({cal.pixels} pixels) with {cal.describe_draws()}: std → {cal.describe_map()}, in bins of "
             f"the std matching the RMS error; ±1σ held {cal.coverage_before:.2f} of those pixels before "
             f"and {cal.coverage_after:.2f} after (0.68 for a Gaussian error; errors are heavier-tailed)."]
    if cal.intensity is not None:
        lines.append("The mean is first corrected by a gain and offset per image predicted from its own "
                     "percentiles (fitted on the same images).")
    if cal.interval_factor is not None:
        lines.append(f"Interval: {cal.promise()}; compute it as mean ± {cal.interval_factor:.3g}·std "
                     "(`microdiff predict` writes it as NAME_lower.tif / NAME_upper.tif).")
    if cal.spread_differs(options["samples"], options["steps"], bundle.sample.uncertainty):  # predict warns
        lines.append(f"This package predicts with {options['samples']} samples × {options['steps']} steps, "
                     f"not the {cal.describe_draws()} the calibration was fitted for: the std's spread, and "
                     "so its scale, differ.")
    return " ".join(lines)


def _readme(bundle: Bundle, options: dict, name: str) -> str:
    task = bundle.task
    rad = f" ({task.unit})" if task.unit else ""
    return f"""# {name}

A Conditional Variational Diffusion Model (CVDM: a diffusion model whose per-pixel noise
schedule is learned) trained with microdiff {bundle.microdiff_version} for {task.describe(bundle.scale)}.

## Inputs and outputs
- `input`: the raw image `[batch, channel, y, x]` in its own units (no normalisation needed;
  the model normalises each image {task.describe_input_norm(bundle.percentiles)} inside).
- `mean`: {_what_mean(bundle, options)}: deterministic, in the input's intensity units{rad}.
- `std`: {_what_std(bundle, options)} (the model's uncertainty), same units.

{_calibration_note(bundle, options)}

Output pixels are {bundle.scale}× smaller than input pixels. Same image, same output:
the seed is fixed. The same model runs in microdiff (`microdiff predict MODEL image.tif`),
where the seed, K and N can be changed, and images of any size are tiled.

## Validation
Validate on held-out pairs the model was not trained on with
`microdiff evaluate MODEL DATA --out EVAL`: PSNR, SSIM and NRMSE after the affine match
of CARE (super-resolution) or RMSE in rad (QPI), resolution by Fourier ring correlation,
and whether the std is calibrated (error/std coverage, Spearman rank of std against error).
The test tensors in this package were simulated, not measured: they check that the
package reproduces microdiff's output, not that the model fits your microscope.

## Cite
- {CVDM_CITATION} doi:{CVDM_DOI}
- microdiff {__version__}, the package that trained and exported this model.
"""


def export_bioimageio(model_dir: str | Path, out: str | Path, samples: int | None = None,
                      steps: int | None = None, seed: int = 0, test_image: str | Path | None = None,
                      name: str | None = None, authors: list[str] | None = None,
                      cite_url: str | None = None, overwrite: bool = False) -> Path:
    """Write the package ``out`` (``.zip``) for the model folder ``model_dir``; returns ``out``.

    samples, steps: K and N of the packaged prediction (default: the model's sampling
    config; samples 0: the one-pass prediction of a model with the variance head);
    test_image: the test input (default: simulated for the model's task); authors: names
    for the package (default: "microdiff user"); cite_url: where to cite this training
    (e.g. your paper or repository), added to the citations.
    """
    v = _need_extra()
    from .bioimageio_model import PosteriorMean

    model_dir, out = Path(model_dir), Path(out)
    _check_arguments(out, overwrite, samples, steps, name, test_image)
    cite_extra = _checked_metadata(v, authors, cite_url)  # before any slow work
    model, bundle = load_bundle(model_dir)
    samples = bundle.sample.samples if samples is None else samples
    if samples == 0:  # the one-pass package: before any slow work, say if it cannot be
        Predictor(model, bundle).check_one_pass(return_samples=False, refine=bundle.task.data_consistency)
    folder_name = "".join(ch for ch in model_dir.resolve().parent.name if ch in NAME_CHARACTERS)
    title = name or f"microdiff CVDM {bundle.task.kind} {folder_name}".strip()
    options = {"samples": samples, "steps": steps or bundle.sample.steps,
               "seed": seed, "tile": bundle.sample.tile, "overlap": bundle.sample.overlap}
    net = PosteriorMean(bundle.to_dict(), **options)
    net.model.load_state_dict(model.state_dict())
    net.eval()
    x = (_test_input_from_file(Path(test_image), bundle) if test_image
         else bundle.task.test_input(bundle.scale, bundle.image_channels, np.random.default_rng(seed)))
    with torch.no_grad():
        mean, std = (t.numpy() for t in net(torch.from_numpy(x[None])))
    with tempfile.TemporaryDirectory(prefix="microdiff-bmz-") as tmp_name:
        tmp = Path(tmp_name)
        _write_files(tmp, net, bundle, options, title, x, mean, std)
        descr = _describe(v, tmp, bundle, options, title, mean.shape[1], authors, cite_extra)
        _save(descr, out)
    return out


def _check_arguments(out: Path, overwrite: bool, samples: int | None, steps: int | None, name: str | None,
                     test_image: str | Path | None) -> None:
    if out.suffix != ".zip":
        raise UserError(f"{out}: the package is a zip file; name it *.zip")
    if out.exists() and not overwrite:
        raise ImageWriteError(f"{out} exists; use --overwrite to replace it")
    if samples is not None and samples < 0:
        raise UserError(f"--samples must be at least 0 (0: one pass, for a model with the variance head), "
                        f"got {samples}")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    if name is not None and (not name.strip() or set(name) - set(NAME_CHARACTERS)):
        raise UserError(f"--name {name!r}: the Zoo allows letters, digits, spaces and _+-() only")
    if test_image is not None and not Path(test_image).is_file():
        raise UserError(f"--test-image {test_image}: no such file")


def _write_files(tmp: Path, net: torch.nn.Module, bundle: Bundle, options: dict, title: str, x: np.ndarray,
                 mean: np.ndarray, std: np.ndarray) -> None:
    """Test tensors, sample TIFFs, weights, the architecture source, the environment, the
    README and the cover, into ``tmp``."""
    np.save(tmp / "test_input.npy", x[None])
    np.save(tmp / "test_mean.npy", mean)
    np.save(tmp / "test_std.npy", std)
    for tensor, data in (("input", x), ("mean", mean[0]), ("std", std[0])):  # for viewers (FAIR)
        tifffile.imwrite(tmp / f"sample_{tensor}.tif", data)
    torch.save(net.state_dict(), tmp / "weights.pt")
    shutil.copyfile(Path(__file__).with_name("bioimageio_model.py"), tmp / ARCHITECTURE_FILE)
    (tmp / "environment.yaml").write_text(
        "name: microdiff\nchannels:\n  - conda-forge\ndependencies:\n  - python>=3.10\n"
        f"  - pytorch>={torch.__version__.split('+')[0]}\n  - pip\n  - pip:\n"
        f"    - microdiff=={__version__}\n")
    (tmp / "README.md").write_text(_readme(bundle, options, title))
    _cover(tmp / "cover.png", x, mean[0], std[0], bundle.task.unit)


def _describe(v, tmp: Path, bundle: Bundle, options: dict, title: str, out_channels: int,
              authors: list[str] | None, cite_extra: list):
    """The spec-0.5 ``ModelDescr`` of the files in ``tmp``: axes with pixel sizes (output =
    input / scale), channel names from the task, test and sample tensors, weights."""
    task, px = bundle.task, bundle.pixel_size_um
    unit = {"unit": "micrometer"} if px else {}
    in_scale = float(px) if px else 1.0
    out_names = [v.Identifier(n) for n in task.output_names(out_channels)]
    in_names = [v.Identifier(n) for n in task.channel_names(bundle.image_channels)]

    def space_in(axis: str) -> object:
        return v.SpaceInputAxis(id=v.AxisId(axis), size=v.ParameterizedSize(min=MIN_SIZE, step=SIZE_STEP),
                                scale=in_scale, **unit)

    def space_out(axis: str) -> object:
        return v.SpaceOutputAxis(id=v.AxisId(axis), scale=in_scale / bundle.scale, **unit,
                                 size=v.SizeReference(tensor_id=v.TensorId("input"), axis_id=v.AxisId(axis)))

    def output(tensor: str, what: str) -> object:
        return v.OutputTensorDescr(
            id=v.TensorId(tensor), description=what,
            axes=[v.BatchAxis(), v.ChannelAxis(channel_names=out_names), space_out("y"), space_out("x")],
            test_tensor=v.FileDescr(source=tmp / f"test_{tensor}.npy"),
            sample_tensor=v.FileDescr(source=tmp / f"sample_{tensor}.tif"))

    return v.ModelDescr(
        name=title,
        description=(f"CVDM (learned per-pixel noise schedule) for {task.kind}: the prediction "
                     f"({bundle.sample.point_estimate}) and {_what_std(bundle, options)}."),
        authors=[v.Author(name=a) for a in (authors or [DEFAULT_AUTHOR])],
        cite=[v.CiteEntry(text=CVDM_CITATION, doi=v.Doi(CVDM_DOI)), *cite_extra],
        license=v.LicenseId("MIT"),
        documentation=v.FileDescr(source=tmp / "README.md"),
        covers=[v.FileDescr(source=tmp / "cover.png")],
        tags=["microdiff", "diffusion", "cvdm", "uncertainty", task.title.replace(" ", "-"), "2d", "pytorch"],
        inputs=[v.InputTensorDescr(
            id=v.TensorId("input"), description="raw image in its own units",
            axes=[v.BatchAxis(), v.ChannelAxis(channel_names=in_names), space_in("y"), space_in("x")],
            test_tensor=v.FileDescr(source=tmp / "test_input.npy"),
            sample_tensor=v.FileDescr(source=tmp / "sample_input.tif"),
            data=v.IntervalOrRatioDataDescr(type="float32"))],
        outputs=[output("mean", "the prediction (input units; rad for QPI)"),
                 output("std", "posterior std: the per-pixel uncertainty (same units)")],
        weights=v.WeightsDescr(pytorch_state_dict=v.PytorchStateDictWeightsDescr(
            source=tmp / "weights.pt",
            architecture=v.ArchitectureFromFileDescr(
                source=tmp / ARCHITECTURE_FILE, callable=v.Identifier("PosteriorMean"),
                kwargs={"bundle": bundle.to_dict(), **options}),
            pytorch_version=v.Version(torch.__version__.split("+")[0]),
            dependencies=v.FileDescr(source=tmp / "environment.yaml"))),
        config={"microdiff": {"version": __version__, "task": task.kind, "scale": bundle.scale, **options}},
    )


def _save(descr, out: Path) -> None:
    """The package, validated by the spec, written atomically to ``out``."""
    from bioimageio.spec import save_bioimageio_package

    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.stem}.partial.zip")
    try:
        save_bioimageio_package(descr, output_path=part)
        part.replace(out)
    except OSError as err:
        raise ImageWriteError(f"{out}: could not be written ({err.strerror or err})") from None
    except ValueError as err:  # the package failed the spec's validation
        raise UserError(f"{out}: the package did not validate ({str(err).splitlines()[0]})") from None
    finally:
        part.unlink(missing_ok=True)
