"""Options of the optimiser step and of the point estimate: EMA warm-up, per-module gradient
clipping, and ZMD's mean network as the prediction."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model

from microdiff.config import Config, ConfigError, TrainConfig, apply_overrides, load_config
from microdiff.train import Trainer


def test_ema_warmup_follows_the_weights_early_and_the_decay_later() -> None:
    model = tiny_model("fixed-linear")
    trainer = Trainer(model, TrainConfig(ema=0.99, ema_warmup=True))
    assert trainer.ema_decay(1) == pytest.approx(2 / 11)
    assert trainer.ema_decay(100) == pytest.approx(101 / 110)
    assert trainer.ema_decay(10_000) == 0.99
    assert Trainer(tiny_model("fixed-linear"), TrainConfig(ema=0.99)).ema_decay(1) == 0.99


def test_ema_after_one_step_is_the_warmup_blend() -> None:
    """ema₁ = d·ema₀ + (1 − d)·θ₁ with d = 2/11: a wrong decay or blend direction fails."""
    torch.manual_seed(0)
    model = tiny_model("fixed-linear")
    with torch.no_grad():
        model.denoiser.conv_out.weight.normal_(0, 0.1)
    before = model.denoiser.conv_out.weight.detach().clone()
    trainer = Trainer(model, TrainConfig(ema=0.99, ema_warmup=True, lr=1e-2, warmup=0))
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    trainer.train_step(x, y, torch.Generator().manual_seed(0))
    after = trainer.model.denoiser.conv_out.weight.detach()
    d = 2 / 11
    torch.testing.assert_close(trainer.ema.denoiser.conv_out.weight, d * before + (1 - d) * after)


def _set_grads(model, denoiser: float, schedule: float) -> None:
    for p in model.denoiser.parameters():
        p.grad = torch.full_like(p, denoiser)
    for p in model.schedule.parameters():
        p.grad = torch.full_like(p, schedule)


def _norm(params) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))


def test_per_module_clipping_keeps_a_schedule_spike_off_the_denoiser() -> None:
    model = tiny_model("learned")
    dn = list(model.denoiser.parameters())
    per = Trainer(model, TrainConfig(grad_clip=1.0, grad_clip_scope="per-module"))
    _set_grads(model, 1e-4, 10.0)
    small = _norm(dn)
    assert small < 1.0
    total = per._clip()
    assert _norm(dn) == pytest.approx(small)  # untouched: its own norm is below the bound
    assert _norm(model.schedule.parameters()) == pytest.approx(1.0, rel=1e-4)
    assert total > 1.0  # the reported norm is the one before clipping

    glob = Trainer(model, TrainConfig(grad_clip=1.0))
    _set_grads(model, 1e-4, 10.0)
    glob._clip()
    assert _norm(dn) < 0.5 * small  # global clipping shrinks the denoiser's step with the spike
    everything = list(model.parameters())
    assert _norm([p for p in everything if p.grad is not None]) == pytest.approx(1.0, rel=1e-4)


def test_clip_groups_cover_every_parameter_once() -> None:
    model = tiny_model("learned", zmd=True)
    groups = model.clip_groups()
    ids = [id(p) for g in groups for p in g]
    assert len(groups) == 3 and len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_mean_net_estimate_is_the_base_plus_mu() -> None:
    model = tiny_model("fixed-cosine", residual=True, zmd=True)
    with torch.no_grad():
        model.mean_net.conv_out.weight.normal_(0, 0.1)
        model.denoiser.conv_out.weight.normal_(0, 0.1)
    x = torch.randn(2, 1, 8, 8)
    out = model.sample(x, steps=3, samples=3, generator=torch.Generator().manual_seed(0),
                       point_estimate="mean-net")
    torch.testing.assert_close(out.mean, x + model.predict_mean(x))
    torch.testing.assert_close(out.sample_mean, out.samples.mean(1))
    assert not torch.allclose(out.mean, out.sample_mean)
    plain = model.sample(x, steps=3, samples=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.samples, out.samples)  # the estimate does not change the draws
    torch.testing.assert_close(plain.mean, plain.sample_mean)
    with pytest.raises(ValueError, match="ZMD"):
        tiny_model("fixed-cosine").sample(x, steps=2, point_estimate="mean-net")


def test_config_refuses_a_mean_net_estimate_without_the_mean_net() -> None:
    with pytest.raises(ConfigError, match="zmd.enabled"):
        apply_overrides(load_config("demo-faithful"), ["sample.point_estimate=mean-net"])
    cfg = apply_overrides(load_config("demo-faithful"), ["model.zmd.enabled=true",
                                                         "sample.point_estimate=mean-net"])
    assert cfg.sample.options()["point_estimate"] == "mean-net"
    assert Config().sample.options() == {"eta": 1.0, "grid": "gamma", "clip": None,
                                         "point_estimate": "sample-mean", "gamma_min": None,
                                         "uncertainty": "samples"}


def test_scaled_mean_network_is_the_regression_parameterisation() -> None:
    """zmd.scaled: μ = target_scale · net(x) and its MSE in units of target_scale."""
    model = tiny_model("fixed-cosine", residual=True, zmd=True, target_scale=0.25)
    model.mean_scale = 0.25
    with torch.no_grad():
        model.mean_net.conv_out.weight.normal_(0, 0.1)
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    mu = model.predict_mean(x)
    torch.testing.assert_close(mu, 0.25 * model.mean_net(x))
    want = (((mu - (y - x)) / 0.25) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(model.loss(x, y)["mean"], want)
    cfg = apply_overrides(load_config("demo"), ["model.zmd.enabled=true", "model.zmd.scaled=true"])
    from microdiff.models import build_model

    assert build_model(cfg.model).mean_scale == cfg.model.target_scale


def test_the_default_predicts_with_the_mean_network_and_the_faithful_preset_does_not() -> None:
    demo, faithful = load_config("demo"), load_config("demo-faithful")
    assert demo.model.zmd.enabled and demo.model.zmd.scaled and demo.sample.point_estimate == "mean-net"
    assert demo.model.zmd.net == demo.model.denoiser  # μ: a regression U-Net of the denoiser's size
    assert (demo.train.grad_clip_scope, demo.train.ema_warmup) == ("per-module", True)
    assert faithful.model.schedule.kind == "learned" and not faithful.model.zmd.enabled
    assert faithful.sample.point_estimate == "sample-mean"
    assert (faithful.train.grad_clip_scope, faithful.train.ema_warmup) == ("global", False)
    assert faithful.model.denoiser == demo.model.denoiser and faithful.data == demo.data
    # issue 20: the demo predicts in one pass (μ(x) and the variance head's σ(x)), trained on
    # single-structure and mixed images; the presets that compare schedules keep the samples' std
    assert (demo.sample.samples, demo.sample.uncertainty, demo.train.val_samples) == (0, "head", 0)
    assert demo.model.zmd.variance_net == demo.model.denoiser and demo.data.structure == "any"
    for name in ("demo-faithful", "demo-fixed-cosine", "demo-fixed-linear", "qpi-2shot", "qpi-2shot-tie"):
        cfg = load_config(name)
        assert cfg.model.zmd.variance_net is None and cfg.sample.uncertainty == "samples", name
        assert cfg.sample.samples >= 4 and cfg.train.val_samples == 4, name
    for name in ("qpi-2shot", "qpi-poly", "paper"):  # measured with the paper's design
        assert load_config(name).sample.point_estimate == "sample-mean"
