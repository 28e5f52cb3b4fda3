"""The napari plugin (issue 9), driven offscreen: the widget predicts in a worker thread
and adds mean and std layers on the output grid; readers and sample data.

Runs with ``QT_QPA_PLATFORM=offscreen`` on a viewer model (offscreen Qt has no OpenGL, so
no canvas); the full-window screenshot for the docs needs an X display (see
``test_napari_screenshot.py``)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("napari", reason="the optional extra microdiff[napari] is not installed "
                    "(pip install 'microdiff[napari]'; make test installs it)")
pytest.importorskip("pytestqt", reason="pytest-qt (in microdiff[napari]) is not installed")

from helpers import tiny_model_config  # noqa: E402
from napari.components import ViewerModel  # noqa: E402

from microdiff.checkpoint import save_bundle  # noqa: E402
from microdiff.config import SampleConfig  # noqa: E402
from microdiff.data.io import Image, write_image  # noqa: E402
from microdiff.diffusion import CVDM  # noqa: E402
from microdiff.napari import readers  # noqa: E402
from microdiff.napari.geometry import output_geometry  # noqa: E402
from microdiff.napari.sample_data import simulated_pair, simulated_qpi  # noqa: E402
from microdiff.napari.widget import PredictWidget  # noqa: E402
from microdiff.predictor import load  # noqa: E402

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


@pytest.fixture
def model(tmp_path) -> Path:
    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    return save_bundle(tmp_path / "run" / "model", CVDM.from_config(cfg), cfg,
                       SampleConfig(steps=3, samples=2), scale=2, pixel_size_um=0.0626)


def _run(widget, qtbot) -> None:
    widget.run()
    assert widget.busy
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)


def test_widget_adds_mean_and_std_with_the_output_scale(model, qtbot, tmp_path) -> None:
    viewer = ViewerModel()
    image = np.random.default_rng(0).uniform(50, 500, (24, 20)).astype(np.float32)
    viewer.add_image(image, name="cell", scale=(0.0626, 0.0626), translate=(3.0, 5.0))
    widget = PredictWidget(viewer)
    qtbot.addWidget(widget.native)
    assert [name for name, _ in widget._image_layers()] == ["cell"]
    widget.image.value = viewer.layers["cell"]
    widget.model_folder.value = model
    assert (widget.samples.value, widget.steps.value) == (2, 3)  # the model's sampling config
    widget.seed.value, widget.device.value = 4, "cpu"
    _run(widget, qtbot)
    assert widget.status.value.startswith("cell: mean and std (not calibrated) added"), widget.status.value
    assert "cell lower" not in viewer.layers  # no calibration, no interval
    mean, std = viewer.layers["cell mean"], viewer.layers["cell std"]
    assert mean.data.shape == std.data.shape == (48, 40)
    np.testing.assert_allclose(mean.scale, (0.0313, 0.0313))
    np.testing.assert_allclose(std.scale, (0.0313, 0.0313))
    np.testing.assert_allclose(mean.translate, (3.0 - 0.25 * 0.0626, 5.0 - 0.25 * 0.0626))
    # the same numbers as the Python API with the same seed, K, N
    res = load(model).predict(image, samples=2, steps=3, seed=4)
    np.testing.assert_array_equal(mean.data, res.mean)
    np.testing.assert_array_equal(std.data, res.std)
    np.testing.assert_allclose(std.contrast_limits, (0.0, np.percentile(res.std, 99.5)), rtol=1e-6)
    assert widget.progress.value == widget.progress.max == 3  # one tile × 3 steps
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    target = DOCS_IMG / "napari_widget.png" if os.environ.get("MICRODIFF_UPDATE_DOCS") else tmp_path / "w.png"
    assert widget.native.grab().save(str(target))  # the widget, rendered offscreen


def test_a_calibrated_model_adds_its_interval_as_hidden_layers(model, qtbot) -> None:
    from microdiff.calibration import Calibration, StdCalibration
    from microdiff.checkpoint import write_calibration

    write_calibration(model, Calibration(StdCalibration(0.5, 0.0), 2.0, 0.1, 0.1, 32, 2, 3, "held-out", 12,
                                         12288, 12, "2026-12-07 00:00 UTC", 0.9, 0.7, unit="image",
                                         interval_method="conformal", form="scale"))
    viewer = ViewerModel()
    image = np.random.default_rng(1).uniform(50, 500, (16, 16)).astype(np.float32)
    viewer.add_image(image, name="cell")
    widget = PredictWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value, widget.model_folder.value = viewer.layers["cell"], model
    widget.seed.value, widget.device.value = 2, "cpu"
    _run(widget, qtbot)
    assert widget.status.value.startswith(
        "cell: mean and calibrated std, interval lower/upper (hidden) added"), widget.status.value
    res = load(model).predict(image, samples=2, steps=3, seed=2)
    for name, expected in (("std", res.std), ("lower", res.lower), ("upper", res.upper)):
        np.testing.assert_array_equal(viewer.layers[f"cell {name}"].data, expected)
    assert not viewer.layers["cell lower"].visible and viewer.layers["cell std"].visible
    np.testing.assert_allclose(res.upper - res.mean, 2.0 * res.std, rtol=1e-4)  # λ̂ · calibrated std


def test_a_z_stack_is_predicted_plane_by_plane_and_keeps_its_z_scale(model, qtbot) -> None:
    viewer = ViewerModel()
    viewer.add_image(np.random.default_rng(1).uniform(0, 9, (3, 16, 16)), name="z", scale=(0.3, 0.1, 0.1))
    widget = PredictWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value, widget.model_folder.value, widget.device.value = viewer.layers["z"], model, "cpu"
    _run(widget, qtbot)
    mean = viewer.layers["z mean"]
    assert mean.data.shape == (3, 32, 32)
    np.testing.assert_allclose(mean.scale, (0.3, 0.05, 0.05))
    np.testing.assert_allclose(mean.translate, (0.0, -0.025, -0.025))  # Z untouched
    assert widget.progress.value == widget.progress.max == 9  # 3 planes × 3 steps


def test_an_rgb_layer_feeds_a_polychromatic_qpi_model(qtbot, tmp_path) -> None:
    from helpers import tiny_qpi_config

    from microdiff.runs import train_run

    train_run(tiny_qpi_config("qpi-poly", steps=2), tmp_path / "poly", progress=False)
    viewer = ViewerModel()
    rgb = np.random.default_rng(3).uniform(0.5, 1.5, (24, 24, 3)).astype(np.float32)
    viewer.add_image(rgb, name="rgb", rgb=True, scale=(0.21, 0.21), translate=(1.0, 2.0))
    widget = PredictWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.image.value, widget.model_folder.value = viewer.layers["rgb"], tmp_path / "poly" / "model"
    widget.device.value = "cpu"
    _run(widget, qtbot)
    phase = viewer.layers["rgb mean"]
    assert phase.data.shape == (24, 24) and widget.run_button.enabled
    np.testing.assert_allclose(phase.scale, (0.21, 0.21))  # scale factor 1: the same grid
    np.testing.assert_allclose(phase.translate, (1.0, 2.0))
    res = load(tmp_path / "poly" / "model").predict(np.moveaxis(rgb, -1, 0), axes="CYX", samples=2, steps=3)
    np.testing.assert_array_equal(phase.data, res.mean)


def test_a_layer_that_does_not_fit_the_model_gets_one_sentence(model, qtbot, monkeypatch) -> None:
    shown = []
    monkeypatch.setattr("microdiff.napari.widget.show_error", shown.append)
    viewer = ViewerModel()
    viewer.add_image(np.zeros((2, 3, 16, 16)), name="4d")
    widget = PredictWidget(viewer)
    qtbot.addWidget(widget.native)
    widget.run()  # no layer chosen yet
    assert shown == ["choose an image layer first"]
    widget.image.value, widget.model_folder.value, widget.device.value = viewer.layers["4d"], model, "cpu"
    _run(widget, qtbot)
    assert "the model expects 1 input channel(s)" in shown[-1] and "Traceback" not in shown[-1]
    assert len(viewer.layers) == 1 and widget.run_button.enabled


def test_a_hot_pixel_does_not_set_the_std_layers_contrast() -> None:
    from microdiff.napari.widget import std_display_range

    std = np.random.default_rng(0).uniform(0.02, 0.06, (64, 64)).astype(np.float32)
    std[3, 5] = 44.0  # the variance head at a saturated spot: ~1000x the rest
    low, high = std_display_range(std)
    assert low == 0.0 and 0.055 < high < 0.06  # the map's own range, not the outlier's
    assert std_display_range(np.zeros((4, 4))) == (0.0, 1.0)  # a zero map still gets a range
    assert std_display_range(np.full((4, 4), np.nan)) == (0.0, 1.0)


def test_output_geometry_puts_output_pixels_inside_input_pixels() -> None:
    scale, translate = output_geometry((0.1, 0.1), (0.0, 0.0), 2)
    assert scale == (0.05, 0.05) and translate == pytest.approx((-0.025, -0.025))
    # the first input pixel spans [-0.05, 0.05]: its two output pixels are centred at ±0.025
    scale, translate = output_geometry((2.0, 0.1, 0.1), (1.0, 0.0, 0.0), 3)
    assert scale[0] == 2.0 and translate[0] == 1.0 and scale[1] == pytest.approx(0.1 / 3)


def test_readers_open_mrc_files_and_model_folders(model, tmp_path) -> None:
    write_image(tmp_path / "raw.mrc", Image(np.ones((9, 16, 16), np.uint16), "ZYX", 0.0626, z_spacing=0.1))
    reader = readers.get_reader(str(tmp_path / "raw.mrc"))
    (data, meta, kind), = reader(str(tmp_path / "raw.mrc"))
    assert kind == "image" and data.shape == (9, 16, 16)
    np.testing.assert_allclose(meta["scale"], (0.1, 0.0626, 0.0626), rtol=1e-5)
    assert readers.get_reader(str(model)) is readers.read_model_folder
    assert readers.read_model_folder(str(model)) == [(None,)] and readers.LAST_MODEL == [model]
    assert readers.get_reader(str(tmp_path)) is None and readers.get_reader(str(tmp_path / "x.tif")) is None


def test_a_new_widget_starts_with_the_last_opened_model(model, qtbot) -> None:
    readers.read_model_folder(str(model))
    widget = PredictWidget(ViewerModel())
    qtbot.addWidget(widget.native)
    assert Path(widget.model_folder.value) == model and widget.steps.value == 3


def test_sample_data_is_calibrated() -> None:
    (low, low_meta), (target, target_meta) = simulated_pair(size=64)
    assert low.shape == (32, 32) and target.shape == (64, 64)
    assert target_meta["scale"][0] == pytest.approx(low_meta["scale"][0] / 2)
    (stack, stack_meta), (phi, _) = simulated_qpi(size=32)
    assert stack.shape == (2, 32, 32) and phi.shape == (32, 32)
    assert stack_meta["scale"][1] == pytest.approx(0.21)


def test_the_manifest_is_valid() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("microdiff")
    assert {w.display_name for w in manifest.contributions.widgets} == {"Predict (CVDM)"}
    assert manifest.contributions.readers[0].accepts_directories


def test_napari_offers_the_reader_for_model_folders_and_mrc_only(model, tmp_path) -> None:
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()

    def ours(path: Path) -> bool:
        return any(r.command.startswith("microdiff.") for r in pm.iter_compatible_readers([str(path)]))

    (tmp_path / "a.mrc").write_bytes(b"")
    assert ours(model) and ours(tmp_path / "a.mrc")
    assert not ours(tmp_path / "cell.tif")  # no "which reader?" question for ordinary files


@pytest.mark.parametrize("shape, rgb, channels, axes", [
    ((16, 16), False, 1, "YX"), ((2, 16, 16), False, 2, "CYX"), ((5, 16, 16), False, 1, "ZYX"),
    ((16, 16, 3), True, 3, "CYX")])
def test_layers_map_to_model_inputs(shape, rgb, channels, axes) -> None:
    from types import SimpleNamespace

    from microdiff.napari.widget import layer_as_model_input

    data, got = layer_as_model_input(np.zeros(shape), rgb, SimpleNamespace(in_channels=channels))
    assert got == axes and data.shape[-2:] == (16, 16)


def test_a_layer_with_the_wrong_channels_is_refused() -> None:
    from types import SimpleNamespace

    from microdiff.errors import UserError
    from microdiff.napari.widget import layer_as_model_input

    with pytest.raises(UserError, match="expects 2 input channel"):
        layer_as_model_input(np.zeros((16, 16)), False, SimpleNamespace(in_channels=2))
    with pytest.raises(UserError, match="an RGB layer has 3"):
        layer_as_model_input(np.zeros((16, 16, 3)), True, SimpleNamespace(in_channels=2))
