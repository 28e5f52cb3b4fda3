"""Data consistency for phase (issue 19): the model's estimate and samples moved towards the
measured intensities by one TIE-preconditioned Gauss-Newton step (``tie``) and then the
Wiener step through the pair's transfer function (``tie+wiener``, the default), with
weights from the image's noise. Against independent computations with the physics functions (the Wiener
step's own math: tests/test_phase_consistency.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_qpi_config
from scipy.ndimage import gaussian_filter

from microdiff.checkpoint import Bundle
from microdiff.config import ConfigError, apply_overrides, load_config
from microdiff.data import phase
from microdiff.data.phase_consistency import wiener_data_consistency
from microdiff.data.phase_truth import QPIConfig, phase_map, simulate_qpi
from microdiff.data.tasks import Task
from microdiff.models import build_model
from microdiff.predictor import Predictor

RANGE = 3.5


def _raw(size: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    phi, _ = phase_map("cells", size, rng, RANGE)
    raw, _ = simulate_qpi(phi, QPIConfig(noise=(noise, noise)), rng, normalize=False)
    return phi, raw


def _task(consistency: bool | str) -> Task:
    return Task("qpi-2shot", RANGE, "mean", baseline_channel=True, tie_regularization=1e-3,
                data_consistency=consistency)


def _step(phi_rad: torch.Tensor, raw: np.ndarray, method: str = "tie") -> torch.Tensor:
    """The expected step, in rad: ``tie`` with weight 100 σ̂² (floored) from the raw pair, then
    for ``tie+wiener`` the Wiener step (the pair's own noise estimate)."""
    r = torch.as_tensor(raw, dtype=torch.float64)
    alpha = max(phase.DATA_CONSISTENCY_GAIN * phase.two_shot_noise(r[0], r[1]) ** 2, phase.ADAPTIVE_TIE_FLOOR)
    tie = phase.tie_data_consistency(phi_rad, r[0], r[1], regularization=alpha)
    return wiener_data_consistency(tie, r[0], r[1]) if method == "tie+wiener" else tie


def test_config_and_task_rules() -> None:
    with pytest.raises(ValueError, match="baseline channel"):
        Task("qpi-2shot", RANGE, "mean", data_consistency=True)
    with pytest.raises(ConfigError, match="data.data_consistency needs data.baseline_channel"):
        apply_overrides(tiny_qpi_config("qpi-2shot", 2), ["data.data_consistency=true"])
    preset = load_config("qpi-2shot-tie")  # the measured design: noise-adaptive channel and the step
    assert preset.data.data_consistency and preset.data.tie_regularization == "auto"
    assert Task.from_dict(_task(True).to_dict()).data_consistency
    assert not Task.from_dict({k: v for k, v in _task(True).to_dict().items() if k != "data_consistency"}
                              ).data_consistency  # bundles saved before the option
    assert preset.data.data_consistency == "tie+wiener" and _task(True).data_consistency == "tie+wiener"
    assert _task("tie").data_consistency == "tie" and _task(False).data_consistency == ""
    assert Task.from_dict(_task("tie").to_dict()).data_consistency == "tie"
    with pytest.raises(ValueError, match="data_consistency is one of"):
        _task("newton")
    tie = apply_overrides(load_config("qpi-2shot-tie"), ["data.data_consistency=tie"])
    assert tie.data.data_consistency == "tie"
    with pytest.raises(ConfigError):
        apply_overrides(load_config("qpi-2shot-tie"), ["data.data_consistency=newton"])


@pytest.mark.parametrize("method", ["tie", "tie+wiener"])
def test_refine_is_the_identity_when_off_and_one_step_per_image_when_on(method: str) -> None:
    phi, raw = _raw(48, 0.02, seed=1)
    x = _task(True).condition(torch.from_numpy(raw / raw.mean()).float())[None]
    g = torch.Generator().manual_seed(0)
    point = torch.randn(1, 1, 48, 48, generator=g) * 0.1
    smooth = gaussian_filter(torch.randn(1, 3, 1, 48, 48, generator=g).numpy(), (0, 0, 0, 3, 3), mode="wrap")
    samples = point[:, None] + torch.from_numpy(smooth / smooth.std() * 0.05).float()  # smooth spread
    same = _task(False).refine(x, point, samples)
    assert same[0] is point and same[1] is None and same[2] is samples
    p2, std2, s2 = _task(method).refine(x, point, samples)
    norm = x[0, :2].double()  # the step sees the normalised pair; its weight is scale-free
    expect = _step(point[0, 0].double() * RANGE, norm.numpy(), method) / RANGE
    torch.testing.assert_close(p2[0, 0].double(), expect, atol=1e-6, rtol=0)
    each = torch.stack([_step(samples[0, k, 0].double() * RANGE, norm.numpy(), method) / RANGE
                        for k in range(3)])
    torch.testing.assert_close(s2[0, :, 0].double(), each, atol=1e-6, rtol=0)
    torch.testing.assert_close(std2[0, 0].double(), each.std(0, correction=1), atol=1e-6, rtol=0)
    # the intensities pin the smooth spread (TIE's regime, q² ≫ α): the refined samples agree
    assert float(std2.mean()) < 0.5 * float(samples.std(1).mean())


@pytest.mark.parametrize("method", ["tie", "tie+wiener"])
def test_the_step_moves_a_wrong_estimate_to_the_truth_on_clean_data(method: str) -> None:
    phi, raw = _raw(64, 0.0, seed=2)
    truth = torch.as_tensor(phi - phi.mean())
    x = _task(method).condition(torch.from_numpy(raw / raw.mean()).float())[None]
    wrong = 0.6 * truth  # a network that under-shoots by 40 %
    point, _, _ = _task(method).refine(x, (wrong / RANGE).float()[None, None])
    before = float((wrong - truth).square().mean().sqrt())
    after = float((point[0, 0].double() * RANGE - truth).square().mean().sqrt())
    assert after < 0.2 * before


def test_predict_applies_the_step_in_radians() -> None:
    """An untrained residual regression model answers the TIE channel (its output layer
    starts at zero); with data consistency the prediction is that answer after one step."""
    cfg = apply_overrides(tiny_qpi_config("qpi-2shot", 2), [
        "data.qpi_input_norm=mean", "data.baseline_channel=true", "model.in_channels=3",
        "model.residual=true", "model.kind=regression", "data.data_consistency=true"])
    predictor = Predictor(build_model(cfg.model).eval(), Bundle(cfg.model, cfg.sample, 1, task=_task(True)))
    _, raw = _raw(48, 0.05, seed=3)
    out = predictor.predict(20 * raw, axes="CYX")  # any intensity scale
    plain = Predictor(predictor.model, Bundle(cfg.model, cfg.sample, 1, task=_task(False)))
    plain = plain.predict(raw, axes="CYX")
    expect = _step(torch.as_tensor(plain.mean, dtype=torch.float64), raw / raw.mean(), "tie+wiener").numpy()
    np.testing.assert_allclose(out.mean, expect, atol=2e-5)
    assert float(np.abs(out.mean - plain.mean).max()) > 1e-2  # the step did something


def test_train_validate_and_predict_a_cvdm_with_data_consistency(tmp_path) -> None:
    from microdiff.predictor import load
    from microdiff.runs import train_run

    cfg = apply_overrides(tiny_qpi_config("qpi-2shot", 3), [
        "data.qpi_input_norm=mean", "data.baseline_channel=true", "model.in_channels=3",
        "model.residual=true", "data.data_consistency=true"])
    train_run(cfg, tmp_path / "run", progress=False)  # validation runs the step too
    pred = load(tmp_path / "run" / "model")
    assert pred.task.data_consistency
    _, raw = _raw(40, 0.02, seed=5)
    res = pred.predict(raw, axes="CYX", samples=2, steps=3, tile=32, overlap=8, return_samples=True,
                       calibrated=False)
    assert res.mean.shape == res.std.shape == (40, 40) and res.samples.shape == (2, 40, 40)
    np.testing.assert_allclose(res.std, res.samples.std(0, ddof=1), rtol=1e-4)  # the refined samples' spread
    # calibration (end of training, microdiff calibrate) sees the refined estimate predict gives
    from microdiff.calibrate_files import held_out_maps

    x, norm = pred.condition(raw, "CYX")
    maps = held_out_maps(pred, [(x, np.zeros((1, 40, 40), np.float32))], samples=2, steps=3)
    refined = pred.predict(raw, axes="CYX", samples=2, steps=3, calibrated=False)
    mean, std = pred.task.output_units(maps[0][1][None], maps[0][0][None], norm)
    np.testing.assert_allclose(mean[0], refined.mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std[0], refined.std, rtol=1e-5, atol=1e-5)
