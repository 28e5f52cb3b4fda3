"""Fiji-ready outputs (issue 9): every TIFF ``microdiff predict`` writes is an ImageJ
hyperstack whose calibration (unit, pixel size, Z spacing) and axes Fiji reads back."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from helpers import tiny_model_config, tiny_qpi_config

from microdiff.checkpoint import save_bundle
from microdiff.config import SampleConfig
from microdiff.data.io import Image, read_image, write_image
from microdiff.diffusion import CVDM
from microdiff.predict_files import predict_files
from microdiff.runs import train_run


@pytest.fixture
def sr_model(tmp_path):
    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    save_bundle(tmp_path / "model", CVDM.from_config(cfg), cfg, SampleConfig(steps=3, samples=3), scale=2,
                pixel_size_um=0.0626)
    return tmp_path / "model"


def _imagej(path):
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej, f"{path.name} is not an ImageJ TIFF"
        num, den = tif.pages[0].tags["XResolution"].value
        return tif.imagej_metadata, den / num, tif.series[0].axes, tif.series[0].shape


def test_mean_std_and_samples_carry_unit_spacing_and_labels(sr_model, tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 500, (24, 20)).astype(np.float32)
    write_image(tmp_path / "in" / "cell.tif", Image(image, "YX", 0.0626))
    predict_files(sr_model, [tmp_path / "in"], tmp_path / "out", save_samples=True, progress=False)
    for kind in ("mean", "std"):
        meta, px, axes, shape = _imagej(tmp_path / "out" / f"cell_{kind}.tif")
        assert meta["unit"] in ("um", "micron") and px == pytest.approx(0.0313, rel=1e-6)
        assert axes == "YX" and shape == (48, 40)
    meta, px, axes, shape = _imagej(tmp_path / "out" / "cell_samples.tif")
    assert axes == "ZYX" and shape == (3, 48, 40) and px == pytest.approx(0.0313, rel=1e-6)
    assert meta["Labels"] == ["sample 1", "sample 2", "sample 3"]


def test_a_focal_series_keeps_its_z_spacing(sr_model, tmp_path) -> None:
    stack = np.random.default_rng(1).uniform(0, 500, (3, 16, 16)).astype(np.float32)
    write_image(tmp_path / "in" / "z.tif", Image(stack, "ZYX", 0.0626, z_spacing=0.2))
    assert read_image(tmp_path / "in" / "z.tif").z_spacing == pytest.approx(0.2)
    predict_files(sr_model, [tmp_path / "in"], tmp_path / "out", stack="slices", progress=False)
    meta, px, axes, shape = _imagej(tmp_path / "out" / "z_mean.tif")
    assert axes == "ZYX" and shape == (3, 32, 32)
    assert meta["spacing"] == pytest.approx(0.2) and px == pytest.approx(0.0313, rel=1e-6)
    back = read_image(tmp_path / "out" / "z_mean.tif")
    assert back.z_spacing == pytest.approx(0.2) and back.pixel_size == pytest.approx(0.0313, rel=1e-6)


def test_mrc_z_spacing_round_trips(tmp_path) -> None:
    data = np.ones((2, 8, 8), np.float32)
    write_image(tmp_path / "s.mrc", Image(data, "ZYX", 0.0626, z_spacing=0.125))
    back = read_image(tmp_path / "s.mrc")
    assert back.pixel_size == pytest.approx(0.0626, rel=1e-5) and back.z_spacing == pytest.approx(0.125)


def test_label_count_must_match_the_planes(tmp_path) -> None:
    with pytest.raises(ValueError, match="2 labels for 3 planes"):
        write_image(tmp_path / "x.tif", Image(np.zeros((3, 4, 4), np.float32), "ZYX", 0.1, labels=["a", "b"]))


def test_a_qpi_stack_gives_a_calibrated_phase_map(tmp_path) -> None:
    train_run(tiny_qpi_config(steps=2), tmp_path / "run", progress=False)
    stack = np.random.default_rng(2).uniform(0.8, 1.2, (2, 24, 24)).astype(np.float32)
    write_image(tmp_path / "in" / "pair.tif", Image(stack, "CYX", 0.21))
    predict_files(tmp_path / "run" / "model", [tmp_path / "in"], tmp_path / "out", save_samples=True,
                  progress=False)
    meta, px, axes, shape = _imagej(tmp_path / "out" / "pair_mean.tif")
    assert axes == "YX" and shape == (24, 24) and px == pytest.approx(0.21, rel=1e-6)
    _, _, axes, shape = _imagej(tmp_path / "out" / "pair_samples.tif")
    assert axes == "ZYX" and shape[1:] == (24, 24)
