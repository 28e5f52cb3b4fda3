"""Every loss term against an independent closed-form computation on fixed tensors.

The loss of :meth:`CVDM.loss` is recomputed here from its definition in METHOD.md, with
time derivatives by finite differences (float64) instead of autograd, the KL from its
Gaussian formula and the forward process written out, so that a wrong sign, weight,
square root, derivative order or endpoint in the model's code fails a test. T = 4 puts
t₀ = 0.25 and t₁ = 0.75 where γ is neither 1 nor 0, so the endpoint terms and the
prior's √γ₁ matter numerically.
"""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model

from microdiff.diffusion import noise_features
from microdiff.sampling import step_coefficients

T = 4
H = 1e-4  # finite-difference step in t


def _model(kind: str, zmd: bool = False, seed: int = 0):
    """A float64 tiny model whose networks are far from their (partly zero) initialisation."""
    model = tiny_model(kind, seed=seed, residual=True, zmd=zmd, target_scale=0.5, timesteps=T).double()
    gen = torch.Generator().manual_seed(seed + 100)
    nets = [model.denoiser] + ([model.mean_net] if zmd else [])
    nets += [model.schedule.unet] if model.schedule.uses_network else []
    with torch.no_grad():
        for net in nets:
            for p in net.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        if kind == "learned":  # τ ≠ ρ′: the flow term of L_β is not ~0
            model.schedule.tau_net.b3.add_(0.5)
    return model


def _inputs(seed: int = 1, b: int = 3, size: int = 8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, size, size, generator=gen, dtype=torch.float64)
    y = x + 0.3 * torch.randn(b, 1, size, size, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.3, 0.45, 0.6], dtype=torch.float64)[:b]
    eps = torch.randn(b, 1, size, size, generator=gen, dtype=torch.float64)
    return x, y, t, eps


def _gamma(model, lam: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """γ = exp(−λ ρ(t)) straight from the time network (no clamp needed at these t)."""
    return torch.exp(-lam * model.schedule.rho(t).view(-1, 1, 1, 1))


def _mean(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).mean(1)


def _diffused(model, x, y):
    mu = model.predict_mean(x)
    r = y - x
    if mu is not None:
        r = r - mu
    scale = 0.5 * (model.zmd_sigma if mu is not None else 1.0)
    return r / scale, mu


def reference_terms(model, x, y, t, eps) -> dict[str, torch.Tensor]:
    """The loss terms of METHOD.md, computed without the model's loss code."""
    with torch.no_grad():
        lam = model.schedule.lam(x)
        y0, mu = _diffused(model, x, y)
        g = _gamma(model, lam, t).expand_as(y0)
        y_t = torch.sqrt(g) * y0 + torch.sqrt(1 - g) * eps
        eps_hat = model.eps_hat(y_t, x, g, mu)
        g_plus, g_minus = _gamma(model, lam, t + H), _gamma(model, lam, t - H)
        dg = (g_plus - g_minus) / (2 * H)
        d2g = (g_plus - 2 * g + g_minus) / H**2
        if model.schedule.rate_is_exact:
            beta = -dg / g  # the exact kind has no separate rate: β is ρ′λ by construction
        else:
            beta = lam * model.schedule.tau_net(t).view(-1, 1, 1, 1)
        ones = torch.ones_like(t)
        g0 = _gamma(model, lam, ones / T)
        g1 = _gamma(model, lam, ones * (1 - 1 / T))
        m1, v1 = torch.sqrt(g1) * y0, 1 - g1
        kl = 0.5 * (torch.log(v1) - 1 + (1 + m1**2) / v1)  # KL(N(0,1) ‖ N(m1, v1))
        terms = {
            "eps": _mean((eps - eps_hat) ** 2),
            "beta": _mean((dg + beta * g) ** 2) + _mean((g0 - 1) ** 2) + _mean(g1**2),
            "prior": _mean(kl),
            "gamma": 1e-3 * _mean(d2g**2),
        }
        if mu is not None:
            terms["mean"] = _mean((mu - (y - x)) ** 2)
    return terms


@pytest.mark.parametrize(("kind", "zmd"), [("learned", False), ("learned-exact", False),
                                           ("fixed-cosine", False), ("learned", True)])
def test_each_term_matches_its_closed_form(kind, zmd) -> None:
    model = _model(kind, zmd)
    x, y, t, eps = _inputs()
    got = model.loss(x, y, noise=(t, eps))
    want = reference_terms(model, x, y, t, eps)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name].detach(), want[name], rtol=1e-5, atol=1e-9, msg=name)


def test_terms_are_not_trivially_small() -> None:
    """The comparison above only bites if every term (and the flow part of L_β) is sizeable."""
    model = _model("learned", zmd=True)
    x, y, t, eps = _inputs()
    want = reference_terms(model, x, y, t, eps)
    for name, v in want.items():
        assert torch.all(v > 1e-4), name
    lam = model.schedule.lam(x).detach()
    g = _gamma(model, lam, t).detach()
    dg = (_gamma(model, lam, t + H) - _gamma(model, lam, t - H)).detach() / (2 * H)
    flow = _mean((dg + lam * model.schedule.tau_net(t).detach().view(-1, 1, 1, 1) * g) ** 2)
    assert torch.all(flow > 1e-4)


def test_flow_term_vanishes_when_the_rate_is_the_derivative_of_rho() -> None:
    """With τ := ρ′ the faithful schedule satisfies ∂γ/∂t = −βγ: L_β is the endpoints only."""
    model = _model("learned")
    x, y, t, eps = _inputs()
    sched = model.schedule
    sched.tau_net.forward = lambda s: sched.rho_derivatives(s)[1]  # type: ignore[method-assign]
    got = model.loss(x, y, noise=(t, eps))["beta"].detach()
    lam = sched.lam(x).detach()
    ones = torch.ones_like(t)
    endpoints = (_mean((_gamma(model, lam, ones / T) - 1) ** 2)
                 + _mean(_gamma(model, lam, ones * (1 - 1 / T)) ** 2)).detach()
    torch.testing.assert_close(got, endpoints, rtol=1e-7, atol=1e-12)


def test_total_loss_is_the_weighted_sum_of_batch_means() -> None:
    model = _model("learned", zmd=True)
    model.weights = {"eps": 1.5, "beta": 0.3, "prior": 0.7, "gamma": 5.0, "mean": 2.5}
    x, y, t, eps = _inputs()
    terms = model.loss(x, y, noise=(t, eps))
    want = sum(w * terms[k].mean() for k, w in model.weights.items())
    torch.testing.assert_close(model.total_loss(terms), want)
    unweighted = sum(v.mean() for v in terms.values())
    assert not torch.isclose(model.total_loss(terms), unweighted)


def test_default_weights_are_the_papers() -> None:
    """Weights 1, 2, 2, 2 (and ZMD's mean 1) in the total, not only in the dict."""
    model = _model("learned", zmd=True)
    x, y, t, eps = _inputs()
    terms = model.loss(x, y, noise=(t, eps))
    want = (terms["eps"].mean() + 2 * terms["beta"].mean() + 2 * terms["prior"].mean()
            + 2 * terms["gamma"].mean() + terms["mean"].mean())
    torch.testing.assert_close(model.total_loss(terms), want)


def test_denoiser_sees_the_forward_process_that_the_sampler_inverts() -> None:
    """The y_t given to the denoiser in training is √γ y0 + √(1−γ) ε with γ = γ(t, x), its
    noise features are those of that γ, and the sampler's ŷ0 with the true ε returns y0."""
    model = _model("learned")
    x, y, t, eps = _inputs()
    seen = {}

    def grab(module, args):
        seen["input"], seen["features"] = args[0].detach(), args[1].detach()

    handle = model.denoiser.register_forward_pre_hook(grab)
    model.loss(x, y, noise=(t, eps))
    handle.remove()
    lam = model.schedule.lam(x).detach()
    y0, _ = _diffused(model, x, y)
    g = _gamma(model, lam, t).detach()
    y_t = seen["input"][:, :1]
    torch.testing.assert_close(y_t, torch.sqrt(g) * y0 + torch.sqrt(1 - g) * eps)
    torch.testing.assert_close(seen["input"][:, 1:], x)
    torch.testing.assert_close(seen["features"], noise_features(g))
    co = step_coefficients(g.log(), g.log() * 0.5, eta=1.0)
    torch.testing.assert_close((y_t - co["sqrt_1m_g_t"] * eps) / co["sqrt_g_t"], y0)


@pytest.mark.parametrize("eta", [0.25, 0.5, 0.8])
def test_step_variance_scales_with_eta_squared(eta) -> None:
    """σ² = η² (1 − γ_s)/(1 − γ_t) (1 − γ_t/γ_s) and the ε̂ coefficient √(1 − γ_s − σ²)."""
    g_t = torch.tensor([1e-4, 0.2, 0.5, 0.9], dtype=torch.float64)
    g_s = torch.tensor([3e-3, 0.4, 0.6, 0.999], dtype=torch.float64)
    co = step_coefficients(g_t.log(), g_s.log(), eta=eta)
    var = eta**2 * (1 - g_s) / (1 - g_t) * (1 - g_t / g_s)
    torch.testing.assert_close(co["sigma"] ** 2, var)
    torch.testing.assert_close(co["c_eps"], torch.sqrt(1 - g_s - var))
    torch.testing.assert_close(co["sqrt_g_s"], g_s.sqrt())


def test_eta_above_one_is_refused() -> None:
    model = tiny_model("fixed-linear")
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="eta"):
        model.sample(x, steps=3, eta=1.5)
    with pytest.raises(ValueError, match="eta"):
        step_coefficients(torch.tensor([-1.0]), torch.tensor([-0.5]), eta=1.01)


def test_prior_term_uses_sqrt_gamma_mean_and_one_minus_gamma_variance() -> None:
    """A direct check of the prior's two moments with a hand-picked γ₁ (not via the model)."""
    model = _model("fixed-cosine")
    x, y, t, eps = _inputs()
    lam = model.schedule.lam(x)
    g1 = _gamma(model, lam, torch.full_like(t, 1 - 1 / T)).detach()
    assert 0.05 < float(g1.min()) and float(g1.max()) < 0.95  # both moments matter here
    y0, _ = _diffused(model, x, y)
    p = torch.distributions.Normal(torch.zeros_like(y0), 1.0)
    q = torch.distributions.Normal(torch.sqrt(g1) * y0, torch.sqrt(1 - g1))
    want = _mean(torch.distributions.kl_divergence(p, q))
    torch.testing.assert_close(model.loss(x, y, noise=(t, eps))["prior"].detach(), want)
