"""File formats: a round trip per format with the pixel size preserved; real fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from microdiff.data.io import (
    Image,
    ImageReadError,
    ImageWriteError,
    image_stem,
    read_biosr_cell,
    read_image,
    read_npz_pairs,
    widefield_from_raw_sim,
    write_image,
    write_mrc,
    write_npz_pairs,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
rng = np.random.default_rng(0)


@pytest.mark.parametrize(("name", "stem"), [
    ("a.tif", "a"), ("cell_0.5um.tif", "cell_0.5um"), ("a.ome.tif", "a"), ("A.OME.TIFF", "A"),
    ("x.y.mrc", "x.y"), ("cell_0.5um", "cell_0.5um"), ("notes.txt", "notes.txt")])
def test_image_stem_strips_only_the_image_suffix(name, stem) -> None:
    assert image_stem(name) == stem


@pytest.mark.parametrize("name", ["a.tif", "a.tiff", "a.ome.tif"])
@pytest.mark.parametrize(("dtype", "axes", "shape"), [
    (np.uint16, "YX", (12, 10)), (np.float32, "CYX", (2, 12, 10)), (np.uint8, "ZYX", (3, 8, 9)),
])
def test_tiff_round_trip(tmp_path, name, dtype, axes, shape) -> None:
    data = (rng.random(shape) * 200).astype(dtype)
    write_image(tmp_path / name, Image(data, axes, pixel_size=0.0313))
    back = read_image(tmp_path / name)
    np.testing.assert_array_equal(back.data, data)
    assert back.axes == axes and back.data.dtype == dtype
    assert back.pixel_size == pytest.approx(0.0313, rel=1e-6)


def test_imagej_tiff_has_fiji_calibration(tmp_path) -> None:
    write_image(tmp_path / "m.tif", Image(np.zeros((4, 5), np.float32), "YX", 0.0626))
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] in ("um", "micron")
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.0626, rel=1e-6)


def test_tiff_without_calibration_has_no_pixel_size(tmp_path) -> None:
    tifffile.imwrite(tmp_path / "plain.tif", np.ones((4, 4), np.uint16))
    assert read_image(tmp_path / "plain.tif").pixel_size is None


def test_mrc_round_trip(tmp_path) -> None:
    data = (rng.random((3, 16, 16)) * 1000).astype(np.uint16)
    write_image(tmp_path / "s.mrc", Image(data, "ZYX", 0.0626))
    back = read_image(tmp_path / "s.mrc")
    np.testing.assert_array_equal(back.data, data)
    assert back.axes == "ZYX" and back.pixel_size == pytest.approx(0.0626, rel=1e-5)


@pytest.mark.parametrize(("name", "dtype"), [("g.png", np.uint8), ("g16.png", np.uint16)])
def test_png_round_trip(tmp_path, name, dtype) -> None:
    data = (rng.random((9, 7)) * np.iinfo(dtype).max).astype(dtype)
    write_image(tmp_path / name, Image(data, "YX"))
    back = read_image(tmp_path / name)
    np.testing.assert_array_equal(back.data, data)
    assert back.data.dtype == dtype


def test_jpeg_round_trip_is_close(tmp_path) -> None:
    data = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (32, 1))
    write_image(tmp_path / "g.jpg", Image(data, "YX"))
    back = read_image(tmp_path / "g.jpg")
    assert back.data.shape == data.shape and np.abs(back.data.astype(int) - data).mean() < 3


def test_npz_pairs_round_trip(tmp_path) -> None:
    x, y = rng.random((2, 8, 8, 1)).astype(np.float32), rng.random((2, 8, 8, 1)).astype(np.float32)
    write_npz_pairs(tmp_path / "p.npz", x, y)
    bx, by = read_npz_pairs(tmp_path / "p.npz")
    np.testing.assert_array_equal(bx, x)
    np.testing.assert_array_equal(by, y)
    np.savez(tmp_path / "bad.npz", a=x)
    with pytest.raises(ImageReadError, match="'x' and 'y'"):
        read_npz_pairs(tmp_path / "bad.npz")


def test_biosr_cell_layout(tmp_path) -> None:
    raw = (rng.random((9, 8, 8)) * 100).astype(np.uint16)
    gt = (rng.random((1, 16, 16)) * 100).astype(np.uint16)
    write_mrc(tmp_path / "RawSIMData_level_03.mrc", Image(raw, "ZYX", 0.0626))
    write_mrc(tmp_path / "SIM_gt.mrc", Image(gt, "ZYX", 0.0313))
    wf, target = read_biosr_cell(tmp_path, 3)
    np.testing.assert_allclose(wf.data, raw.mean(0), rtol=1e-6)
    assert wf.axes == "YX" and target.data.shape == (16, 16)
    assert wf.pixel_size == pytest.approx(0.0626, rel=1e-5)
    assert target.pixel_size == pytest.approx(0.0313, rel=1e-5)
    with pytest.raises(ImageReadError, match="RawSIMData_level_04"):
        read_biosr_cell(tmp_path, 4)


def test_writers_never_overwrite_unless_asked(tmp_path) -> None:
    img = Image(np.zeros((4, 4), np.uint16), "YX")
    for name in ("a.tif", "a.mrc", "a.png"):
        write_image(tmp_path / name, img)
        with pytest.raises(ImageWriteError, match="exists"):
            write_image(tmp_path / name, img)
        write_image(tmp_path / name, img, overwrite=True)
    assert not list(tmp_path.glob(".*.tmp"))


def test_clear_errors_for_bad_files(tmp_path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(ImageReadError, match="not a readable TIFF"):
        read_image(tmp_path / "junk.tif")
    (tmp_path / "a.bmpx").write_bytes(b"")
    with pytest.raises(ImageReadError, match="unsupported"):
        read_image(tmp_path / "a.bmpx")
    with pytest.raises(ImageWriteError, match="convert"):
        write_image(tmp_path / "f.png", Image(np.zeros((2, 2), np.float32), "YX"))


@pytest.mark.skipif(not (SHARED / "rdl-sim-mt" / "MT.mrc").exists(), reason="../shared/data absent")
def test_real_biosr_mrc_reads_with_shape_dtype_and_voxel_size() -> None:
    img = read_image(SHARED / "rdl-sim-mt" / "MT.mrc")
    assert img.data.shape == (9, 256, 256) and img.data.dtype == np.uint16
    assert img.axes == "ZYX" and img.pixel_size == pytest.approx(0.0626, rel=1e-4)
    wf = widefield_from_raw_sim(img)
    assert wf.data.shape == (256, 256) and wf.data.dtype == np.float32


@pytest.mark.skipif(not (SHARED / "biosr-mt-cell001").exists(), reason="../shared/data absent")
def test_real_biosr_pair_reads() -> None:
    raw = read_image(SHARED / "biosr-mt-cell001" / "raw_sim_level09.tif")
    gt = read_image(SHARED / "biosr-mt-cell001" / "sim_gt.tif")
    assert raw.data.shape == (9, 128, 128) and gt.data.squeeze().shape == (256, 256)
    wf = widefield_from_raw_sim(raw)
    assert wf.data.shape == (128, 128)


def test_an_rgb_image_predicts_as_three_channels_as_it_trains() -> None:
    """``YXC`` (an RGB TIFF or PNG) is channels-last: prediction moves the channels first as
    training does (``image_chw``), so a three-channel (qpi-poly) model takes it."""
    from microdiff.data.axes import as_2d, image_chw

    rgb = Image((rng.random((6, 5, 3)) * 255).astype(np.uint8), "YXC", None)
    data, axes = as_2d(rgb)
    assert axes == "CYX" and data.shape == (3, 6, 5)
    np.testing.assert_array_equal(data, image_chw(rgb))
    np.testing.assert_array_equal(data[1], rgb.data[:, :, 1])
