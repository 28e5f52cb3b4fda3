"""``microdiff calibrate`` and a calibrated bundle in predict (issue 18): the calibration's
round trip through bundle.json, the calibrated std and interval in physical units, the
command's outputs and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import tiny_model_config

import microdiff
from microdiff.calibration import Calibration, StdCalibration
from microdiff.checkpoint import read_bundle, save_bundle, write_calibration
from microdiff.config import SampleConfig
from microdiff.data.simulate_files import write_simulated_pairs
from microdiff.diffusion import CVDM

CAL = Calibration(StdCalibration(0.4, 0.0), 1.7, 0.1, 0.1, 32, 3, 2, "held-out", 8, 32768, 32,
                  "2026-11-30 00:00 UTC", 0.97, 0.68)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "microdiff.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def model_folder(tmp_path):
    cfg = tiny_model_config("learned-exact", residual=True, target_scale=0.2)
    torch.manual_seed(0)
    model = CVDM.from_config(cfg)
    with torch.no_grad():
        model.denoiser.conv_out.weight.normal_(0, 0.05)
    return save_bundle(tmp_path / "model", model, cfg, SampleConfig(steps=2, samples=3), scale=2)


def test_calibration_round_trips_through_the_bundle(model_folder) -> None:
    assert read_bundle(model_folder).calibration is None
    write_calibration(model_folder, CAL)
    assert read_bundle(model_folder).calibration == CAL
    meta = json.loads((model_folder / "bundle.json").read_text())
    assert meta["calibration"]["method"] == "binned-linear" and meta["calibration"]["source"] == "held-out"
    new = replace(CAL, unit="image", interval_method="conformal", target="balanced", form="scale")
    write_calibration(model_folder, new)
    assert read_bundle(model_folder).calibration == new
    older = {k: v for k, v in new.to_dict().items()
             if k not in ("unit", "interval_method", "target", "form", "knots", "intensity")}
    assert Calibration.from_dict(older) == replace(new, unit="tile", interval_method="rcps", target="rms",
                                                   form="affine")
    write_calibration(model_folder, None)
    assert read_bundle(model_folder).calibration is None


def test_predict_applies_the_calibration_in_physical_units(model_folder) -> None:
    image = np.random.default_rng(0).gamma(2, 100, (16, 20)).astype(np.float32)
    raw = microdiff.load(model_folder).predict(image, seed=3)
    write_calibration(model_folder, CAL)
    cal = microdiff.load(model_folder).predict(image, seed=3)
    np.testing.assert_array_equal(cal.mean, raw.mean)
    np.testing.assert_array_equal(cal.std_raw, raw.std)
    np.testing.assert_allclose(cal.std, 0.4 * raw.std, rtol=1e-5)  # offset 0: a pure scale in any units
    np.testing.assert_allclose(cal.lower, raw.mean - 1.7 * cal.std, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(cal.upper, raw.mean + 1.7 * cal.std, rtol=1e-4, atol=1e-2)
    off = microdiff.load(model_folder).predict(image, seed=3, calibrated=False)
    assert off.lower is None and off.std_raw is None
    np.testing.assert_array_equal(off.std, raw.std)
    write_calibration(model_folder, replace(CAL, std=StdCalibration(1.0, 0.05)))
    shifted = microdiff.load(model_folder).predict(image, seed=3)  # offset in normalised units: scaled
    assert np.all(shifted.std > raw.std)
    with pytest.warns(UserWarning, match="calibrated for 3 samples × 2 steps"):
        microdiff.load(model_folder).predict(image, seed=3, samples=5)


def test_calibrate_command_fits_stores_and_predict_writes_the_interval(model_folder, tmp_path) -> None:
    data = tmp_path / "held"
    write_simulated_pairs(data, "mt", 2, 64, level=9, seed=5, progress=False)
    proc = _run("calibrate", str(model_folder), str(data), "--tile", "8")
    assert proc.returncode == 0, proc.stderr
    assert "±1σ coverage" in proc.stdout and "mean ±" in proc.stdout and "8×8 tile's pixels" in proc.stdout
    cal = read_bundle(model_folder).calibration
    assert cal is not None and cal.images == 2 and cal.pixels == 2 * 64 * 64 and cal.units == 2 * 64
    assert cal.unit == "tile" and cal.interval_method == "conformal"  # 2 images < 9: tiles
    assert cal.samples == 3 and cal.steps == 2 and cal.source == str(data)
    assert cal.form == "scale" and cal.std.offset == 0.0 and f"std → {cal.std.slope:.3g}·std;" in proc.stdout
    assert cal.interval_factor is not None and 0.6 < cal.coverage_after < 0.76  # the fit's own pixels
    out = tmp_path / "pred"
    proc = _run("predict", str(model_folder), str(data / "input"), "--out", str(out), "--raw-std")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"mt_0000{i}_{k}.tif" for i in (0, 1)
                           for k in ("mean", "std", "lower", "upper", "std_uncalibrated"))
    proc = _run("evaluate", str(model_folder), str(data), "--out", str(tmp_path / "ev"))
    assert proc.returncode == 0, proc.stderr
    import csv

    rows = [r for r in csv.DictReader((tmp_path / "ev" / "metrics.csv").open()) if r["method"] == "cvdm"]
    assert rows and all(0 <= float(r["coverage_1sigma_raw"]) <= 1 for r in rows)
    for name in ("montage.png", "calibration.png", "sparsification.png"):
        assert (tmp_path / "ev" / name).is_file(), name


def test_calibrate_fits_the_gain_from_32_pairs_and_predict_applies_it(model_folder, tmp_path) -> None:
    """From MIN_IMAGES held-out pairs `calibrate --intensity` fits the per-image gain and offset, and
    `predict` turns the estimate into g · estimate + c (an affine map in any units)."""
    from microdiff.calibrate_files import calibrate_folder
    from microdiff.intensity_calibration import MIN_IMAGES

    data = tmp_path / "held"
    write_simulated_pairs(data, "mt", MIN_IMAGES, 32, level=9, seed=6, progress=False)
    image = np.random.default_rng(1).gamma(2, 100, (16, 20)).astype(np.float32)
    raw = microdiff.load(model_folder).predict(image, seed=3)
    proc = _run("calibrate", str(model_folder), str(data), "--tile", "8", "--intensity")
    assert proc.returncode == 0, proc.stderr
    assert f"gain and offset: fitted on {MIN_IMAGES} images" in proc.stdout
    cal = read_bundle(model_folder).calibration
    assert cal.intensity is not None and cal.intensity.images == MIN_IMAGES
    assert cal.form == "binned" and cal.std.knots is not None and "std → binned (" in proc.stdout
    pred = microdiff.load(model_folder)
    x, _ = pred.condition(image, "YX")
    g, _ = cal.intensity.params(pred.predict_normalized(x, 3, 2, seed=3)["mean"][0])
    corrected = pred.predict(image, seed=3)
    slope, _ = np.polyfit(raw.mean.ravel(), corrected.mean.ravel(), 1)
    assert slope == pytest.approx(g, rel=1e-4) and abs(g - 1) > 1e-3
    np.testing.assert_allclose(corrected.std_raw, raw.std, rtol=1e-6)  # the raw spread, uncorrected
    # the std map applies to the gain-corrected std, as it was fitted: f(g·s), not g·f(s)
    s_norm = pred.predict_normalized(x, 3, 2, seed=3)["std"][0]
    to_physical = float(np.median(raw.std / s_norm))
    np.testing.assert_allclose(raw.std, to_physical * s_norm, rtol=1e-4)  # a pure scale between units
    expected = to_physical * cal.std.apply(g * s_norm)
    np.testing.assert_allclose(corrected.std, expected, rtol=1e-4)
    assert np.max(np.abs(to_physical * g * cal.std.apply(s_norm) / expected - 1)) > 1e-3  # order matters
    np.testing.assert_array_equal(pred.predict(image, seed=3, calibrated=False).mean, raw.mean)
    plain = calibrate_folder(model_folder, data, tile=8, progress=False)  # opt-in; one factor without it
    assert plain.intensity is None and plain.form == "scale" and plain.std.knots is None
    few = tmp_path / "few"
    write_simulated_pairs(few, "mt", 3, 32, level=9, seed=7, progress=False)
    unfitted = calibrate_folder(model_folder, few, tile=8, progress=False, intensity=True)
    assert unfitted.intensity is None and unfitted.form == "scale"


def test_calibrate_refuses_bad_input_in_one_sentence(model_folder, tmp_path) -> None:
    empty = tmp_path / "empty"
    (empty / "input").mkdir(parents=True)
    (empty / "target").mkdir()
    proc = _run("calibrate", str(model_folder), str(empty))
    assert proc.returncode != 0 and "no images" in proc.stderr and "Traceback" not in proc.stderr
    data = tmp_path / "held"
    write_simulated_pairs(data, "mt", 1, 16, level=9, seed=5, progress=False)
    proc = _run("calibrate", str(model_folder), str(data))
    assert proc.returncode != 0 and "no 32×32 calibration tile" in proc.stderr
    proc = _run("calibrate", str(model_folder), str(data), "--tile", "8", "--unit", "pixel")
    assert proc.returncode != 0 and "unit must be one of auto, image, tile" in proc.stderr
    proc = _run("calibrate", str(model_folder), str(data), "--tile", "8", "--alpha", "1.5")
    assert proc.returncode != 0 and "alpha and delta" in proc.stderr
    proc = _run("calibrate", str(model_folder), str(data), "--tile", "8", "--form", "cubic")
    assert proc.returncode != 0 and "form must be one of auto, scale, affine, binned" in proc.stderr
    proc = _run("predict", str(model_folder), str(data / "input"), "--out", str(tmp_path / "p"), "--raw-std")
    assert proc.returncode != 0 and "not calibrated" in proc.stderr
    reg_cfg = tiny_model_config("learned-exact").model_copy(update={"kind": "regression"})
    from microdiff.models import build_model

    reg = save_bundle(tmp_path / "reg", build_model(reg_cfg), reg_cfg, SampleConfig(steps=1, samples=1),
                      scale=2)
    proc = _run("calibrate", str(reg), str(data), "--tile", "8")
    assert proc.returncode != 0 and "no std to calibrate" in proc.stderr


def test_training_ends_with_a_calibration_on_the_whole_held_out_images(tmp_path) -> None:
    """The end-of-training calibration is the one ``microdiff calibrate`` fits on the same
    held-out images (whole, as predict sees them), not one on the training-size crops."""
    from helpers import tiny_config

    from microdiff import calibration
    from microdiff.calibrate_files import held_out_maps
    from microdiff.data.sources import load_training_data
    from microdiff.predictor import load
    from microdiff.runs import train_run

    cfg = tiny_config(steps=2)
    train_run(cfg, tmp_path / "run", progress=False)
    cal = read_bundle(tmp_path / "run" / "model").calibration
    side = cfg.data.image_size  # whole images, larger than the training crops (data.size)
    assert side > cfg.data.size
    assert cal is not None and cal.images == cfg.data.n_val and cal.pixels == cfg.data.n_val * side * side
    assert (cal.samples, cal.steps, cal.tile, cal.form) == (cfg.sample.samples, cfg.sample.steps, 16, "scale")
    assert "held-out images" in cal.source
    val = load_training_data(cfg.data, cfg.train.seed, progress=False).val[: cfg.data.n_val]
    maps = held_out_maps(load(tmp_path / "run" / "model"), [(p.x, p.y.numpy()) for p in val],
                         cfg.sample.samples, cfg.sample.steps, cfg.train.seed)
    again = calibration.fit([(std, mean - y) for std, mean, y in maps], tile=16, samples=cal.samples,
                            steps=cal.steps, source="again")
    assert again.std == cal.std and again.coverage_before == cal.coverage_before
    cfg.train.calibrate = False
    train_run(cfg, tmp_path / "plain", progress=False)
    assert read_bundle(tmp_path / "plain" / "model").calibration is None


def test_montage_marks_where_the_target_leaves_the_interval() -> None:
    from microdiff.evaluation import montage_row

    rng = np.random.default_rng(0)
    target = rng.uniform(0, 10, (32, 32))
    mean = 2.0 * target + 5.0  # another intensity scale: matched back to the target's
    lower, upper = mean - 1.0, mean + 1.0  # ±0.5 in target units
    upper[:4] -= 3.0  # the first rows' interval ends 1 below the target
    panels = montage_row(target, mean, np.ones_like(mean), target, crop=32, interval=(lower, upper))
    expected = np.zeros((32, 32))
    expected[:4] = 1.0
    assert len(panels) == 6
    np.testing.assert_array_equal(panels[5], expected)


def test_demo_report_applies_the_gain_before_the_std_map() -> None:
    """The demo's metrics and montage of a calibrated model with a per-image gain (g = 1.5,
    c = 0.1 for every image) and a binned std map use g · mean + c with the map of g · std,
    as `predict` writes them, not the map of the raw std (the metrics match intensities
    affinely, so the montage's std panel, std · |matching slope|, tells the two apart)."""
    from microdiff import metrics
    from microdiff.config import Config
    from microdiff.data.datasets import Pair
    from microdiff.demo import _evaluate
    from microdiff.evaluation import image_metrics
    from microdiff.intensity_calibration import IntensityCalibration

    cfg = Config()
    cfg.model = tiny_model_config("learned-exact")
    cfg.sample.steps, cfg.sample.samples = 2, 2
    torch.manual_seed(0)
    model = CVDM.from_config(cfg.model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 32, 32, generator=g), torch.rand(1, 32, 32, generator=g)
    inf = float("inf")
    gain = IntensityCalibration((1.5, 0, 0, 0), (0.1, 0, 0, 0), (-inf,) * 4, (inf,) * 4, 32)
    curve = StdCalibration(knots=((100.0, 1000.0), (10.0, 2000.0)))  # the untrained model's std: 10–1000
    rows, _, _, stack = _evaluate(model, cfg, [Pair("mt_0", x[:, ::2, ::2], x, y, 2)],
                                  replace(CAL, std=curve, intensity=gain))
    with torch.no_grad():
        seeded = torch.Generator().manual_seed(cfg.train.seed)
        res = model.sample(x[None], steps=2, samples=2, generator=seeded, **cfg.sample.options())
    mean, std, target = (a[0, 0].double().numpy() for a in (res.mean, res.std, y[None]))
    want = image_metrics(1.5 * mean + 0.1, target, None, curve.apply(1.5 * std))
    assert rows[0]["coverage_1sigma"] == pytest.approx(want["coverage_1sigma"])
    slope = abs(metrics.affine_fit(1.5 * mean + 0.1, target)[0])
    np.testing.assert_allclose(stack[0][2], curve.apply(1.5 * std) * slope, rtol=1e-4, atol=1e-7)
    plain = curve.apply(std) * abs(metrics.affine_fit(mean, target)[0])  # the map of the raw std
    assert np.median(np.abs(stack[0][2] / plain - 1)) > 0.05
