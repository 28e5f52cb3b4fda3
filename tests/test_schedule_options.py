"""Options that change how a learned schedule learns (issue 5): λ bounds, the ε-loss's
gradient route into the schedule, and a separate learning rate for the schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import tiny_model, tiny_model_config

from microdiff.config import ConfigError, ScheduleConfig, TrainConfig
from microdiff.diffusion import CVDM, route_gamma, scale_grad
from microdiff.schedule import LAMBDA0, bounded_lambda
from microdiff.train import Trainer


def test_bounded_lambda_stays_inside_and_is_ln2_at_zero() -> None:
    u = torch.linspace(-50, 50, 1001)
    lam = bounded_lambda(u, 0.3, 2.0)
    assert lam.min() > 0.3 - 1e-6 and lam.max() < 2.0 + 1e-6
    assert torch.all(lam[1:] >= lam[:-1])  # monotone in the network output
    assert bounded_lambda(torch.zeros(1), 0.3, 2.0).item() == pytest.approx(LAMBDA0, rel=1e-6)
    with pytest.raises(ValueError):
        bounded_lambda(u, 0.8, 2.0)  # ln 2 outside


def test_lambda_range_is_validated_and_bounds_the_model() -> None:
    with pytest.raises(Exception, match="lambda_range"):
        ScheduleConfig(lambda_range=(1.0, 2.0))
    model = tiny_model("learned", schedule=ScheduleConfig(
        kind="learned", net=tiny_model_config().schedule.net, time_hidden=64, lambda_range=(0.5, 1.0)))
    x = 100 * torch.randn(2, 1, 16, 16)  # extreme inputs
    lam = model.schedule.lam(x)
    assert lam.min() >= 0.5 and lam.max() <= 1.0


def test_scale_grad_is_identity_forward_and_scales_backward() -> None:
    v = torch.randn(3, 4, requires_grad=True)
    w = torch.rand(3, 4)
    out = scale_grad(v, w)
    assert torch.equal(out, v)
    (out.square().sum()).backward()
    torch.testing.assert_close(v.grad, 2 * v.detach() * w)


def test_elbo_weight_is_minus_dlogsnr_dt_for_a_fixed_schedule() -> None:
    # For a spatially constant schedule the weight is −d log SNR/dt; check it against a
    # finite difference of log SNR(t) for the cosine schedule.
    model = tiny_model("fixed-cosine")
    x = torch.zeros(1, 1, 4, 4)
    t = torch.tensor([0.3], dtype=torch.float64)
    lam = model.schedule.lam(x).double()
    d = model.schedule.derivatives_at(t, lam)
    g = d.gamma.detach().clone().requires_grad_(True)
    routed = route_gamma(g, d.dgamma_dt, "elbo")
    routed.sum().backward()
    h = 1e-5

    def log_snr(tt: float) -> float:
        gam = model.schedule.gamma_at(torch.tensor([tt], dtype=torch.float64), lam)[0, 0, 0, 0]
        return float(torch.log(gam) - torch.log1p(-gam))

    w_fd = -(log_snr(0.3 + h) - log_snr(0.3 - h)) / (2 * h)
    assert w_fd > 0
    # the weight is normalised by its mean; a constant schedule has one value, so it is 1
    torch.testing.assert_close(g.grad, torch.ones_like(g.grad))
    w = (-d.dgamma_dt / (d.gamma * (1 - d.gamma)))[0, 0, 0, 0].item()
    assert w == pytest.approx(w_fd, rel=1e-4)


def _grads(model: CVDM) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.zero_grad()
    data = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 1, 16, 16, generator=data), torch.randn(2, 1, 16, 16, generator=data)
    terms = model.loss(x, y, generator=torch.Generator().manual_seed(3))
    terms["eps"].mean().backward()
    den = {n: p.grad.clone() for n, p in model.denoiser.named_parameters() if p.grad is not None}
    sch = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
           for n, p in model.schedule.named_parameters()}
    return den, sch


@pytest.mark.parametrize("kind", ["learned", "learned-exact"])
def test_eps_grad_routes_only_the_schedule_gradient(kind) -> None:
    base = tiny_model(kind, seed=1)
    with torch.no_grad():  # the denoiser's last layer starts at zero: wake it up
        for p in base.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = {}
    for mode in ("full", "elbo", "none"):
        model = copy.deepcopy(base)
        model.eps_grad = mode
        out[mode] = _grads(model)
    for mode in ("elbo", "none"):  # the denoiser's gradient does not depend on the route
        for name, g in out["full"][0].items():
            torch.testing.assert_close(out[mode][0][name], g)
    norm = {m: math.sqrt(sum(float(g.square().sum()) for g in out[m][1].values())) for m in out}
    assert norm["none"] == 0.0
    assert norm["full"] > 0 and norm["elbo"] > 0
    diff = sum(float((out["elbo"][1][n] - out["full"][1][n]).abs().sum()) for n in out["full"][1])
    assert diff > 0  # the ELBO route changes the schedule's gradient


def test_eps_grad_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="eps_grad"):
        CVDM(tiny_model().schedule, tiny_model().denoiser, eps_grad="weird")
    with pytest.raises((ConfigError, Exception)):
        ScheduleConfig(eps_grad="weird")


def test_lr_scale_zero_freezes_the_schedule_only() -> None:
    cfg = tiny_model_config("learned")
    cfg.schedule.lr_scale = 0.0
    torch.manual_seed(0)
    model = CVDM.from_config(cfg)
    trainer = Trainer(model, TrainConfig(steps=3, batch_size=2, warmup=0, lr=1e-2))
    assert len(trainer.opt.param_groups) == 2
    sched0 = copy.deepcopy(model.schedule.state_dict())
    den0 = copy.deepcopy(model.denoiser.state_dict())
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        trainer.train_step(torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16), generator=gen)
    for k, v in model.schedule.state_dict().items():
        torch.testing.assert_close(v, sched0[k])
    assert any(not torch.equal(v, den0[k]) for k, v in model.denoiser.state_dict().items())


def test_lr_scale_one_keeps_a_single_group() -> None:
    trainer = Trainer(tiny_model("learned"), TrainConfig(steps=1, batch_size=2))
    assert len(trainer.opt.param_groups) == 1
