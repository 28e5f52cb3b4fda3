"""BioImage Model Zoo export (issue 9): the package passes ``bioimageio test`` and its
packaged prediction is exactly what ``microdiff predict`` gives for the same seed, K, N."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import tiny_model_config, tiny_qpi_config

from microdiff.checkpoint import save_bundle
from microdiff.cli import main
from microdiff.config import SampleConfig
from microdiff.diffusion import CVDM
from microdiff.errors import UserError
from microdiff.runs import train_run

pytest.importorskip("bioimageio.core", reason="the optional extra microdiff[bmz] is not installed "
                    "(pip install 'microdiff[bmz]'; make test installs it)")


@pytest.fixture(scope="module")
def sr_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sr") / "run" / "model"
    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    save_bundle(folder, CVDM.from_config(cfg), cfg, SampleConfig(steps=3, samples=2), scale=2,
                pixel_size_um=0.0626)
    return folder


def _cli(*args: str) -> int:
    try:
        sys.argv = ["microdiff", *args]
        main()
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_exported_package_passes_bioimageio_test(sr_model, tmp_path) -> None:
    out = tmp_path / "model.zip"
    assert _cli("export", str(sr_model), "--out", str(out), "--samples", "2", "--steps", "3",
                "--author", "Ada Lovelace", "--cite-url", "https://example.org/our-paper") == 0
    cli = Path(sys.executable).with_name("bioimageio")
    done = subprocess.run([str(cli), "test", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert {"rdf.yaml", "weights.pt", "README.md", "cover.png", "environment.yaml"} <= names
    assert rdf["format_version"].startswith("0.5") and rdf["authors"][0]["name"] == "Ada Lovelace"
    assert any(c.get("doi") == "10.48550/arXiv.2312.02246" for c in rdf["cite"])
    assert any(c.get("url") == "https://example.org/our-paper" for c in rdf["cite"])
    x_axes, y_axes = rdf["inputs"][0]["axes"], rdf["outputs"][0]["axes"]
    assert x_axes[-1]["scale"] == pytest.approx(0.0626) and x_axes[-1]["unit"] == "micrometer"
    assert y_axes[-1]["scale"] == pytest.approx(0.0313)  # output pixels: input / scale factor
    assert [t["id"] for t in rdf["outputs"]] == ["mean", "std"]


def test_packaged_prediction_is_microdiff_predict(sr_model, tmp_path) -> None:
    """The package's own files (architecture source, rdf kwargs, weights.pt) rebuilt as a
    consumer would, against the TIFFs ``microdiff predict`` writes for the test input."""
    import importlib.util

    import torch

    from microdiff.data.io import Image, read_image, write_image
    from microdiff.export_bioimageio import export_bioimageio

    out = export_bioimageio(sr_model, tmp_path / "m.zip", samples=2, steps=3, seed=5)
    with zipfile.ZipFile(out) as z:
        z.extractall(tmp_path / "pkg")
    pkg = tmp_path / "pkg"
    rdf = yaml.safe_load((pkg / "rdf.yaml").read_text())
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    spec = importlib.util.spec_from_file_location("packaged_arch", pkg / arch["source"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = getattr(module, arch["callable"])(**arch["kwargs"])
    net.load_state_dict(torch.load(pkg / "weights.pt", weights_only=True))
    x = np.load(pkg / "test_input.npy")
    with torch.no_grad():
        mean, std = (t.numpy() for t in net.eval()(torch.from_numpy(x)))
    np.testing.assert_array_equal(mean, np.load(pkg / "test_mean.npy"))
    write_image(tmp_path / "in" / "t.tif", Image(x[0, 0], "YX", 0.0626))
    assert _cli("predict", str(sr_model), str(tmp_path / "in"), "--out", str(tmp_path / "pred"),
                "--samples", "2", "--steps", "3", "--seed", "5", "--device", "cpu") == 0
    assert mean.shape == (1, 1, 2 * x.shape[2], 2 * x.shape[3])
    np.testing.assert_array_equal(mean[0, 0], read_image(tmp_path / "pred" / "t_mean.tif").data)
    np.testing.assert_array_equal(std[0, 0], read_image(tmp_path / "pred" / "t_std.tif").data)
    assert float(std.min()) >= 0.0 and float(std.max()) > 0.0  # K = 2 samples differ


def test_a_model_with_the_variance_head_exports_its_one_pass_prediction(tmp_path) -> None:
    """``--samples 0``: the package gives μ(x) and the head's σ(x), as ``predict --samples 0``."""
    import torch

    from microdiff.export_bioimageio import export_bioimageio
    from microdiff.nets.unet import UNetSpec
    from microdiff.predictor import load

    cfg = tiny_model_config("fixed-cosine", residual=True, target_scale=0.2, zmd=True)
    cfg.zmd.scaled, cfg.zmd.variance_net = True, UNetSpec(8, [1], 1)
    folder = tmp_path / "run" / "model"
    save_bundle(folder, CVDM.from_config(cfg), cfg,
                SampleConfig(steps=3, samples=2, point_estimate="mean-net", uncertainty="head"), scale=2)
    out = export_bioimageio(folder, tmp_path / "one.zip", samples=0)
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
        x, mean, std = (np.load(z.open(f"test_{t}.npy")) for t in ("input", "mean", "std"))
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["samples"] == 0
    assert "variance head" in readme
    res = load(folder).predict(x[0, 0], samples=0)
    np.testing.assert_array_equal(mean[0, 0], res.mean)
    np.testing.assert_array_equal(std[0, 0], res.std)
    assert float(torch.from_numpy(std).min()) > 0.0  # the head's σ, not a K = 1 spread of zeros


def test_the_package_readme_states_the_calibration_the_std_carries(tmp_path) -> None:
    """A calibrated bundle exports its calibrated std (as predict writes it) and the README
    says what was fitted and what the interval promises; an uncalibrated one says so, and a
    package predicting with other K × N than the calibration's says the scale differs."""
    from microdiff.calibration import Calibration, StdCalibration
    from microdiff.checkpoint import write_calibration
    from microdiff.export_bioimageio import export_bioimageio
    from microdiff.predictor import load

    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    folder = save_bundle(tmp_path / "run" / "model", CVDM.from_config(cfg), cfg,
                         SampleConfig(steps=3, samples=2), scale=2)

    def readme(name: str, **kw) -> tuple[str, np.ndarray, np.ndarray]:
        with zipfile.ZipFile(export_bioimageio(folder, tmp_path / name, **kw)) as z:
            return (z.read("README.md").decode(), np.load(z.open("test_input.npy")),
                    np.load(z.open("test_std.npy")))

    text, _, _ = readme("raw.zip")
    assert "not calibrated" in text
    cal = Calibration(StdCalibration(0.4, 0.0), 1.7, 0.1, 0.1, 32, 2, 3, "held-out", 12, 12288, 12,
                      "2026-12-07 00:00 UTC", 0.97, 0.68, unit="image", interval_method="conformal",
                      form="scale")
    write_calibration(folder, cal)
    text, x, std = readme("cal.zip")
    assert "std → 0.4·std" in text and "12 held-out images" in text and "0.97" in text and "0.68" in text
    assert cal.promise() in text and "mean ± 1.7·std" in text and "not the 2 samples" not in text
    pred = load(folder)
    np.testing.assert_array_equal(std[0, 0], pred.predict(x[0, 0], seed=0).std)
    np.testing.assert_allclose(std[0, 0], 0.4 * pred.predict(x[0, 0], seed=0, calibrated=False).std,
                               rtol=1e-5)  # the calibrated std, not the raw spread
    with pytest.warns(UserWarning, match="calibrated for 2 samples"):  # predict's own warning, too
        text, _, _ = readme("other.zip", samples=4)
    assert "predicts with 4 samples × 3 steps, not the 2 samples × 3 steps" in text


def test_a_qpi_model_exports_with_its_channels(tmp_path) -> None:
    from bioimageio.core import test_model

    from microdiff.export_bioimageio import export_bioimageio

    train_run(tiny_qpi_config(steps=2), tmp_path / "run", progress=False)
    out = export_bioimageio(tmp_path / "run" / "model", tmp_path / "qpi.zip", samples=2, steps=2)
    summary = test_model(out)
    assert summary.status == "passed", summary.format()
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["defocus_minus", "defocus_plus"]
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["phase"]


def test_a_test_image_of_any_size_is_cropped_to_a_declared_size(sr_model, tmp_path) -> None:
    from microdiff.data.io import Image, write_image
    from microdiff.export_bioimageio import export_bioimageio, valid_size

    assert [valid_size(n) for n in (16, 23, 24, 100, 1000)] == [16, 16, 24, 96, 128]
    image = np.random.default_rng(0).uniform(0, 100, (37, 150)).astype(np.float32)
    write_image(tmp_path / "mine.tif", Image(image, "YX", 0.0626))
    out = export_bioimageio(sr_model, tmp_path / "m.zip", samples=2, steps=2,
                            test_image=tmp_path / "mine.tif")
    with zipfile.ZipFile(out) as z:
        z.extractall(tmp_path / "pkg")
    x = np.load(tmp_path / "pkg" / "test_input.npy")
    assert x.shape == (1, 1, 32, 128)
    np.testing.assert_array_equal(x[0, 0], image[2:34, 11:139])
    write_image(tmp_path / "tiny.tif", Image(image[:8, :8], "YX", 0.0626))
    with pytest.raises(UserError, match="at least 16"):
        export_bioimageio(sr_model, tmp_path / "t.zip", test_image=tmp_path / "tiny.tif")


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx"], "--format 'onnx': use one of bioimageio"),
    (["--name", "a/b"], "the Zoo allows letters"),
    (["--samples", "-1"], "--samples must be at least 0"),
    (["--samples", "0"], "samples 0 (one pass, no sampling) needs a model whose point estimate"),
    (["--author", "a/b"], "not a valid author name"),
    (["--cite-url", "notaurl"], "not an http(s) URL"),
    (["--test-image", "missing.tif"], "no such file"),
])
def test_bad_export_requests_get_one_sentence(sr_model, tmp_path, capsys, args, message) -> None:
    assert _cli("export", str(sr_model), "--out", str(tmp_path / "x.zip"), *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "x.zip").exists()
