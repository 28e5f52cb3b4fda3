"""The regression baseline: learns, and goes through train / predict / evaluate / demo."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from helpers import TINY, fit, tiny_config

import microdiff
from microdiff.config import ModelConfig, TrainConfig, load_config
from microdiff.data.simulate_files import write_simulated_pairs
from microdiff.errors import UserError
from microdiff.evaluate_files import evaluate_folder
from microdiff.models import build_model
from microdiff.regression import RegressionModel
from microdiff.runs import train_run


def _regression_config(steps: int):
    cfg = tiny_config(steps=steps)
    cfg.model = ModelConfig(kind="regression", denoiser=TINY, residual=True, target_scale=0.1)
    return cfg


def test_build_model_follows_the_kind() -> None:
    assert isinstance(build_model(load_config("demo-regression").model), RegressionModel)
    assert isinstance(build_model(load_config("demo").model), microdiff.CVDM)


def test_regression_fits_a_fixed_mapping() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="regression", denoiser=TINY, residual=False))
    x = torch.rand(4, 1, 16, 16)
    y = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # a smoothing the net can learn
    first = model.total_loss(model.loss(x, y)).item()
    trainer, history = fit(model, x, y, TrainConfig(steps=150, batch_size=4, lr=3e-3, warmup=0, ema=0.0))
    assert history[-1]["mse"] < 0.2 * first
    out = trainer.model.sample(x, samples=3)
    assert out.samples.shape == (4, 3, 1, 16, 16) and torch.all(out.std == 0) and out.network_calls == 1


def test_l1_loss_and_bad_kind() -> None:
    model = RegressionModel(torch.nn.Identity(), 1, residual=False, loss_kind="l1")
    x, y = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    assert torch.allclose(model.loss(x, y)["l1"], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="mse"):
        RegressionModel(torch.nn.Identity(), 1, loss_kind="huber")


def test_regression_trains_predicts_and_evaluates(tmp_path) -> None:
    run = train_run(_regression_config(steps=6), tmp_path / "run", progress=False)
    pred = microdiff.load(run.folder / "model")
    assert isinstance(pred.model, RegressionModel)
    image = np.random.default_rng(0).gamma(2, 100, (20, 24)).astype(np.float32)
    res = pred.predict(image, samples=4, seed=0)
    assert res.mean.shape == (40, 48) and np.all(res.std == 0)
    # samples 0 (the demo preset's one pass, kept by --set model.kind=regression) is one pass too
    np.testing.assert_array_equal(pred.predict(image, samples=0, seed=0).mean, res.mean)
    with pytest.raises(UserError, match="no learned schedule"):
        pred.predict(image, return_schedule=True)
    write_simulated_pairs(tmp_path / "data", "er", 2, 32, level=9, seed=0, progress=False)
    evaluate_folder(run.folder / "model", tmp_path / "data", tmp_path / "ev", progress=False,
                    baselines=("bicubic", "richardson-lucy"))
    rows = list(csv.DictReader((tmp_path / "ev" / "metrics.csv").open()))
    assert [r["method"] for r in rows] == ["regression", "bicubic", "richardson-lucy"] * 2
    assert all(r["spearman_std_error"] == "" for r in rows)
    assert (tmp_path / "ev" / "montage.png").is_file() and not (tmp_path / "ev" / "schedule.png").exists()


def test_demo_takes_the_regression_baseline(tmp_path) -> None:
    from microdiff.demo import run_demo

    summary = run_demo(tmp_path / "demo", _regression_config(steps=2), progress=False)
    assert np.isfinite(summary["psnr_mean"]) and np.isnan(summary["spearman_std_error"])
    text = (tmp_path / "demo" / "summary.md").read_text()
    assert "| all | regression |" in text and not (tmp_path / "demo" / "schedule.png").exists()
