"""The physical baseline as a condition channel (issue 19): the TIE phase of the whole image
appended to the two-shot intensities, and the residual taken around the condition's last
channel. Units, signs and shapes against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_qpi_config

from microdiff.checkpoint import Bundle
from microdiff.config import ConfigError, apply_overrides, load_config
from microdiff.data.datasets import make_pair
from microdiff.data.phase import TwoShotConfig, tie_phase
from microdiff.data.phase_truth import QPIConfig, phase_map, simulate_qpi
from microdiff.data.tasks import Task
from microdiff.diffusion import CVDM, residual_base
from microdiff.errors import ShapeError
from microdiff.models import build_model
from microdiff.predictor import Predictor, load
from microdiff.runs import train_run

RANGE = 3.5


def _raw_two_shot(size: int = 64, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    phi, _ = phase_map("natural", size, rng, RANGE)
    raw, _ = simulate_qpi(phi, QPIConfig(noise=(noise, noise)), rng, normalize=False)
    return phi, raw


def _tie_rad(raw: np.ndarray, alpha: float = 1e-3) -> np.ndarray:
    o = TwoShotConfig()
    t = torch.as_tensor(raw, dtype=torch.float64)
    return tie_phase(t[0], t[1], o.defocus_um, o.pixel_um, o.wavelength_um, regularization=alpha).numpy()


def _baseline_config(kind: str = "cvdm", steps: int = 3):
    cfg = tiny_qpi_config("qpi-2shot", steps)
    overrides = ["data.qpi_input_norm=mean", "data.baseline_channel=true", "model.in_channels=3",
                 "model.residual=true"]
    if kind == "regression":
        overrides.append("model.kind=regression")
    return apply_overrides(cfg, overrides)


def test_residual_base_is_the_conditions_last_channels() -> None:
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(residual_base(x, 1), x[:, 2:3])
    with pytest.raises(ValueError, match="at least 4"):
        residual_base(x, 4)
    cfg = _baseline_config().model
    model = CVDM.from_config(cfg)
    y = torch.randn(2, 1, 8, 8)
    y0 = model.to_diffused(x, y, None)
    torch.testing.assert_close(y0, (y - x[:, 2:3]) / cfg.target_scale)  # around the TIE channel, scaled
    torch.testing.assert_close(model.from_diffused(x, y0, None), y)
    perfect = torch.cat([x[:, :2], y], dim=1)  # a perfect baseline leaves nothing to diffuse
    assert float(model.to_diffused(perfect, y, None).abs().max()) == 0.0


def test_the_tie_channel_is_tie_of_the_raw_stack_in_target_units() -> None:
    phi, raw = _raw_two_shot()
    task = Task("qpi-2shot", RANGE, "mean", baseline_channel=True, tie_regularization=1e-3)
    pair = make_pair("p", raw, phi[None], task)
    assert pair.x.shape == (3, 64, 64) and pair.y.shape == (1, 64, 64)
    tie = _tie_rad(raw)  # from the raw intensities: mean normalisation keeps TIE's scale
    np.testing.assert_allclose(pair.x[2].numpy(), tie / RANGE, atol=1e-5)
    np.testing.assert_allclose(pair.y[0].numpy(), (phi - phi.mean()) / RANGE, atol=1e-6)  # zero-mean φ
    # sign and scale: without noise TIE recovers most of the phase
    truth = pair.y[0].numpy()
    assert np.sqrt(np.mean((pair.x[2].numpy() - truth) ** 2)) < 0.5 * truth.std()
    assert task.extra_channels == 1 and Task.from_dict(task.to_dict()) == task
    assert Task("qpi-2shot").extra_channels == 0


def test_config_rules_for_the_baseline_channel() -> None:
    preset = load_config("qpi-2shot-tie")
    assert (preset.model.in_channels, preset.model.residual) == (3, True)
    assert (preset.data.baseline_channel, preset.data.qpi_input_norm) == (True, "mean")
    base = tiny_qpi_config("qpi-2shot")
    with pytest.raises(ConfigError, match="qpi_input_norm=mean"):
        apply_overrides(base, ["data.baseline_channel=true", "model.in_channels=3"])
    with pytest.raises(ConfigError, match="model.in_channels=3"):
        apply_overrides(base, ["data.qpi_input_norm=mean", "data.baseline_channel=true"])
    with pytest.raises(ConfigError, match="qpi-2shot"):
        apply_overrides(load_config("qpi-poly"), ["data.qpi_input_norm=mean", "data.baseline_channel=true"])
    with pytest.raises(ValueError, match="qpi-2shot with input_norm=mean"):
        Task("qpi-2shot", baseline_channel=True)


def test_an_untrained_residual_model_returns_tie_in_radians() -> None:
    """The regression U-Net's output layer starts at zero, so before training the residual
    model's answer is its baseline: the TIE phase of the given (raw) stack, in radians."""
    cfg = _baseline_config("regression")
    task = Task("qpi-2shot", RANGE, "mean", baseline_channel=True, tie_regularization=1e-3)
    predictor = Predictor(build_model(cfg.model).eval(), Bundle(cfg.model, cfg.sample, 1, task=task))
    assert predictor.in_channels == 2
    _, raw = _raw_two_shot(48, noise=0.05, seed=3)
    out = predictor.predict(50 * raw, axes="CYX")  # any intensity scale
    np.testing.assert_allclose(out.mean, _tie_rad(raw), atol=1e-5)
    with pytest.raises(ShapeError, match="2 input channel"):
        predictor.predict(np.concatenate([raw, raw[:1]]), axes="CYX")


def test_train_and_predict_with_the_baseline_channel(tmp_path) -> None:
    train_run(_baseline_config(steps=3), tmp_path / "run", progress=False)
    pred = load(tmp_path / "run" / "model")
    assert pred.in_channels == 2 and pred.task.baseline_channel
    _, raw = _raw_two_shot(40, noise=0.02, seed=5)
    res = pred.predict(raw, axes="CYX", samples=2, steps=3, tile=32, overlap=8)
    assert res.mean.shape == res.std.shape == (40, 40) and np.isfinite(res.mean).all()


def test_extra_tie_channels_come_first_each_at_its_weight() -> None:
    """``tie_extra_regularizations`` adds TIE at those α before the base channel (the residual's)."""
    phi, raw = _raw_two_shot(noise=0.05, seed=2)
    task = Task("qpi-2shot", RANGE, "mean", baseline_channel=True, tie_regularization=1e-3,
                tie_extra_regularizations=(1e-5, 1e-1))
    pair = make_pair("p", raw, phi[None], task)
    assert pair.x.shape == (5, 64, 64) and task.extra_channels == 3
    for channel, alpha in zip((2, 3, 4), (1e-5, 1e-1, 1e-3), strict=True):
        np.testing.assert_allclose(pair.x[channel].numpy(), _tie_rad(raw, alpha) / RANGE, atol=1e-5)
    # the weights matter: weak regularisation keeps more of the (noisy) low frequencies
    assert np.abs(pair.x[2].numpy() - pair.x[3].numpy()).max() > 0.05
    # a bundle's JSON turns the tuple into a list; the task reads back equal
    assert Task.from_dict(task.to_dict()) == task
    assert Task.from_dict({**task.to_dict(), "tie_extra_regularizations": [1e-5, 0.1]}) == task
    with pytest.raises(ValueError, match="need the baseline channel"):
        Task("qpi-2shot", RANGE, "mean", tie_extra_regularizations=(1e-5,))


def test_config_rules_for_extra_tie_channels() -> None:
    base = apply_overrides(tiny_qpi_config("qpi-2shot"), ["data.qpi_input_norm=mean"])
    cfg = apply_overrides(base, ["data.baseline_channel=true", "data.tie_extra_regularizations=[1e-5, 0.1]",
                                 "model.in_channels=5"])
    assert cfg.data.tie_extra_regularizations == [1e-5, 0.1]
    with pytest.raises(ConfigError, match="model.in_channels=5"):
        apply_overrides(base, ["data.baseline_channel=true", "data.tie_extra_regularizations=[1e-5, 0.1]",
                               "model.in_channels=3"])
    with pytest.raises(ConfigError, match="needs data.baseline_channel"):
        apply_overrides(base, ["data.tie_extra_regularizations=[1e-5]"])
    with pytest.raises(ConfigError, match="greater than 0"):
        apply_overrides(base, ["data.baseline_channel=true", "data.tie_extra_regularizations=[0]",
                               "model.in_channels=4"])


def test_a_model_with_extra_tie_channels_takes_two_intensities(tmp_path) -> None:
    cfg = apply_overrides(_baseline_config(steps=2), ["data.tie_extra_regularizations=[1e-5]",
                                                      "model.in_channels=4"])
    train_run(cfg, tmp_path / "run", progress=False)
    pred = load(tmp_path / "run" / "model")
    assert pred.in_channels == 2 and pred.task.tie_extra_regularizations == (1e-5,)
    _, raw = _raw_two_shot(32, noise=0.02, seed=6)
    res = pred.predict(raw, axes="CYX", samples=2, steps=3)
    assert res.mean.shape == (32, 32) and np.isfinite(res.mean).all()


@pytest.mark.parametrize("level", [0.02, 0.1])
def test_the_noise_estimate_from_the_pairs_sum(level: float) -> None:
    """Flat phase: the relative noise of one shot is exactly ℓ / (1 + ℓ) (noise N(ℓ, ℓ²) on
    unit intensity, then divided by the mean); a smooth cell barely biases the estimate."""
    from microdiff.data.phase import ADAPTIVE_TIE_FLOOR, adaptive_tie_regularization, two_shot_noise

    cell = phase_map("cells", 128, np.random.default_rng(4))[0]
    for phi, tol in ((np.zeros((128, 128)), 0.05), (cell, 0.15)):
        raw, _ = simulate_qpi(phi, QPIConfig(noise=(level, level)), np.random.default_rng(5), normalize=False)
        t = torch.from_numpy(raw.astype(np.float64))
        sigma = two_shot_noise(t[0], t[1])
        assert sigma == pytest.approx(level / (1 + level), rel=tol)
        assert two_shot_noise(7 * t[0], 7 * t[1]) == pytest.approx(sigma)  # any intensity scale
        assert adaptive_tie_regularization(t[0], t[1]) == pytest.approx(0.1 * sigma**2)
    clean = torch.ones(64, 64, dtype=torch.float64)
    assert adaptive_tie_regularization(clean, clean) == ADAPTIVE_TIE_FLOOR  # no noise: the floor


def test_the_auto_tie_channel_uses_the_images_own_weight() -> None:
    from microdiff.data.phase import adaptive_tie_regularization

    phi, _ = phase_map("cells", 64, np.random.default_rng(8), RANGE)
    raw, _ = simulate_qpi(phi, QPIConfig(noise=(0.02, 0.02)), np.random.default_rng(9), normalize=False)
    task = Task("qpi-2shot", RANGE, "mean", baseline_channel=True, tie_regularization="auto")
    pair = make_pair("p", raw, phi[None], task)
    t = torch.from_numpy(raw.astype(np.float64))
    alpha = adaptive_tie_regularization(t[0], t[1])
    assert alpha < 1e-4  # low noise: far weaker than the fixed default 1e-3
    np.testing.assert_allclose(pair.x[2].numpy(), _tie_rad(raw, alpha) / RANGE, atol=1e-5)
    assert not np.allclose(pair.x[2].numpy(), _tie_rad(raw, 1e-3) / RANGE, atol=1e-3)
    assert Task.from_dict(task.to_dict()) == task
    cfg = apply_overrides(_baseline_config(), ["data.tie_regularization=auto"])
    assert cfg.data.tie_regularization == "auto"
    with pytest.raises(ConfigError, match="tie_regularization"):
        apply_overrides(_baseline_config(), ["data.tie_regularization=sometimes"])
    with pytest.raises(ValueError, match="or 'auto'"):
        Task("qpi-2shot", RANGE, "mean", baseline_channel=True, tie_regularization="sometimes")
