"""QPI through the ordinary workflow: config → simulated pairs → train → predict in radians
(issue 6). Tiny models; seconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_qpi_config

from microdiff.config import Config, ConfigError, apply_overrides, load_config
from microdiff.data.phase_truth import QPIConfig, phase_map, simulate_qpi
from microdiff.data.sources import load_training_data
from microdiff.data.tasks import Task
from microdiff.errors import ShapeError
from microdiff.predictor import load
from microdiff.runs import train_run


def _qpi_config(task: str = "qpi-2shot", steps: int = 3) -> Config:
    return tiny_qpi_config(task, steps)


def test_presets_and_task_rules() -> None:
    two, poly = load_config("qpi-2shot"), load_config("qpi-poly")
    assert (two.data.task, two.model.in_channels, two.data.scale) == ("qpi-2shot", 2, 1)
    assert not two.model.residual
    assert (poly.data.task, poly.model.in_channels) == ("qpi-poly", 3)
    with pytest.raises(ConfigError, match="data.scale=1"):
        apply_overrides(load_config("qpi-2shot"), ["data.scale=2"])


@pytest.mark.parametrize("task", ["qpi-2shot", "qpi-poly"])
def test_simulated_qpi_pairs_are_normalised_as_the_task_says(task) -> None:
    data = load_training_data(_qpi_config(task).data, seed=0, progress=False)
    p = data.train[0]
    assert data.scale == 1 and p.scale == 1 and data.pixel_size_um == pytest.approx(0.21)
    assert p.x.shape == (2 if task == "qpi-2shot" else 3, 32, 32) and p.y.shape == (1, 32, 32)
    assert float(p.x.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(p.x.max()) == pytest.approx(1.0, abs=1e-6)
    assert float(p.y.min()) >= 0.0 and float(p.y.max()) == pytest.approx(1.0, abs=1e-6)  # φ / 3.5


def test_task_units_round_trip_and_channel_check() -> None:
    task = Task("qpi-2shot", phase_range=3.5)
    stack = np.random.default_rng(0).uniform(5, 9, (2, 8, 8))
    norm = task.fit_input(stack)
    x = norm.normalize(stack, channel_axis=0)
    assert x.min() == pytest.approx(0.0, abs=1e-6) and x.max() == pytest.approx(1.0, abs=1e-6)
    mean, std = task.output_units(np.full((1, 8, 8), 0.5), np.full((1, 8, 8), 0.1), norm)
    assert float(mean[0, 0, 0]) == pytest.approx(1.75) and float(std[0, 0, 0]) == pytest.approx(0.35)
    with pytest.raises(ShapeError, match="2 input channels"):
        task.check_channels(3)
    assert Task.from_dict(None).kind == "sr"  # bundles from before tasks were added


def test_qpi_train_then_predict_in_radians(tmp_path) -> None:
    run = train_run(_qpi_config(steps=3), tmp_path / "run", progress=False)
    assert np.isfinite(run.final["val_psnr"]) and np.isfinite(run.final["val_psnr_baseline"])  # TIE baseline
    pred = load(tmp_path / "run" / "model")
    assert pred.task.kind == "qpi-2shot" and pred.in_channels == 2
    phi, _ = phase_map("natural", 40, np.random.default_rng(9))
    stack, _ = simulate_qpi(phi, QPIConfig(), np.random.default_rng(9))
    res = pred.predict(100 * stack + 7, axes="CYX", samples=2, steps=3, seed=1, tile=32, overlap=8,
                       pixel_size_um=0.21, return_samples=True)
    assert res.mean.shape == res.std.shape == (40, 40) and res.samples.shape == (2, 40, 40)
    assert res.pixel_size_um == pytest.approx(0.21)
    # the input's scale does not matter (min-max normalised); the output is in radians
    again = pred.predict(stack, axes="CYX", samples=2, steps=3, seed=1, tile=32, overlap=8)
    np.testing.assert_allclose(res.mean, again.mean, rtol=1e-4, atol=1e-4)
    k = torch.from_numpy(res.samples)
    np.testing.assert_allclose(res.mean, k.mean(0).numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ShapeError, match="2 input channel"):
        pred.predict(stack[0], axes="YX")


def test_evaluate_a_qpi_model_on_a_simulated_folder(tmp_path) -> None:
    import csv

    from microdiff.data.simulate_files import write_qpi_pairs
    from microdiff.evaluate_files import evaluate_folder

    train_run(_qpi_config(steps=2), tmp_path / "run", progress=False)
    write_qpi_pairs(tmp_path / "data", "qpi-2shot", 2, 32, seed=3, progress=False)
    rows = evaluate_folder(tmp_path / "run" / "model", tmp_path / "data", tmp_path / "eval", samples=2,
                           steps=2, progress=False)
    assert [r["method"] for r in rows] == ["cvdm", "tie", "cvdm", "tie"]
    for r in rows:
        assert r["rmse_rad"] >= 0 and r["psnr"] == pytest.approx(20 * np.log10(3.5 / r["rmse_rad"]))
    assert "coverage_1sigma" in rows[0] and "coverage_1sigma" not in rows[1]
    text = (tmp_path / "eval" / "summary.md").read_text()
    assert "radians" in text and (tmp_path / "eval" / "montage.png").is_file()
    with open(tmp_path / "eval" / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4


def test_mean_normalisation_keeps_the_contrast_that_min_max_loses() -> None:
    phi, _ = phase_map("natural", 48, np.random.default_rng(3))
    raw, _ = simulate_qpi(phi, QPIConfig(noise=(0.0, 0.0)), np.random.default_rng(4), normalize=False)
    scaled = 7.0 * raw  # a brighter lamp or another camera gain: the same phase
    mean_task, minmax_task = Task("qpi-2shot", input_norm="mean"), Task("qpi-2shot")
    x = mean_task.fit_input(scaled).normalize(scaled, channel_axis=0)
    np.testing.assert_allclose(x, raw / raw.mean(), rtol=1e-5)
    contrast = (raw[1] - raw[0]) / raw.mean()  # (I₊ − I₋) / I₀: what the TIE turns into phase
    np.testing.assert_allclose(x[1] - x[0], contrast, rtol=1e-4, atol=1e-6)
    # min-max scales the contrast by I₀ / (max − min): a factor that differs from image to image
    x_mm = minmax_task.fit_input(raw).normalize(raw, channel_axis=0)
    factor = np.median((x_mm[1] - x_mm[0])[contrast != 0] / contrast[contrast != 0])
    assert factor == pytest.approx(raw.mean() / (raw.max() - raw.min()), rel=1e-3)
    phi2, _ = phase_map("natural", 48, np.random.default_rng(8))
    other, _ = simulate_qpi(phi2, QPIConfig(noise=(0.0, 0.0)), np.random.default_rng(4), normalize=False)
    other_factor = other.mean() / (other.max() - other.min())
    assert abs(other_factor / factor - 1) > 0.1
    # the same draws: min-max of the raw stack is the normalised stack
    normed, _ = simulate_qpi(phi, QPIConfig(noise=(0.0, 0.0)), np.random.default_rng(4))
    np.testing.assert_allclose(x_mm, normed, atol=1e-6)
    with pytest.raises(ValueError, match="input_norm"):
        Task("qpi-2shot", input_norm="zscore")
    with pytest.raises(ShapeError, match="positive mean"):
        mean_task.fit_input(np.zeros((2, 4, 4)))


def test_a_mean_normalised_model_keeps_its_normalisation_in_the_bundle(tmp_path) -> None:
    cfg = apply_overrides(_qpi_config(steps=2), ["data.qpi_input_norm=mean"])
    data = load_training_data(cfg.data, seed=0, progress=False)
    assert abs(float(data.train[0].x.mean()) - 1.0) < 1e-4  # divided by the mean, not stretched
    train_run(cfg, tmp_path / "run", progress=False)
    pred = load(tmp_path / "run" / "model")
    assert pred.task.input_norm == "mean"
    phi, _ = phase_map("natural", 32, np.random.default_rng(5))
    raw, _ = simulate_qpi(phi, QPIConfig(), np.random.default_rng(5), normalize=False)
    a = pred.predict(raw, axes="CYX", samples=2, steps=2, seed=0, tile=32, overlap=8)
    b = pred.predict(3.0 * raw, axes="CYX", samples=2, steps=2, seed=0, tile=32, overlap=8)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-4, atol=1e-4)  # gain-invariant
    x, _ = pred.condition(raw, axes="CYX")
    assert float(x.mean()) == pytest.approx(1.0, abs=1e-5)  # divided by the mean, not min-max
    assert Task.from_dict({"kind": "qpi-2shot", "phase_range": 3.5}).input_norm == "minmax"  # old bundles
