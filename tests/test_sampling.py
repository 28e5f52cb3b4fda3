"""Samplers: oracle recovery, determinism, safe steps for large λ, output shapes."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import KINDS, tiny_model

from microdiff.sampling import step_coefficients
from microdiff.schedule import GAMMA_MAX, GAMMA_MIN


def _oracle(model, x, y, samples):
    """ε̂ equal to the true noise of the current sample given the true y0."""
    y0 = model.to_diffused(x, y, model.predict_mean(x)).repeat_interleave(samples, 0)

    def eps_fn(y_t, gamma_t, step):
        return (y_t - gamma_t.sqrt() * y0) / (1 - gamma_t).sqrt()

    return eps_fn


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("eta", "grid"), [(1.0, "gamma"), (0.0, "gamma"), (0.5, "gamma"),
                                         (1.0, "beta-cumprod")])
def test_oracle_noise_returns_the_target(kind, eta, grid) -> None:
    model = tiny_model(kind, residual=True)
    x, y = torch.randn(2, 1, 12, 12), torch.randn(2, 1, 12, 12)
    out = model.sample(x, steps=25, samples=3, generator=torch.Generator().manual_seed(0),
                       eta=eta, grid=grid, eps_fn=_oracle(model, x, y, 3))
    for k in range(3):
        torch.testing.assert_close(out.samples[:, k], y, rtol=0, atol=1e-4)
    assert out.std.abs().max() < 1e-4


def test_ancestral_step_is_the_ddpm_posterior_and_eta0_is_ddim() -> None:
    """The oracle tests cannot see the step coefficients (ŷ0 is exact there); this can."""
    g_t = torch.tensor([1e-5, 0.2, 0.5, 0.9], dtype=torch.float64)
    g_s = torch.tensor([3e-3, 0.4, 0.6, 0.999], dtype=torch.float64)
    a = g_t / g_s
    co = step_coefficients(g_t.log(), g_s.log(), eta=1.0)
    # y_s = A·ŷ0 + B·y_t + σ z with ε̂ = (y_t − sqrt(γ_t) ŷ0)/sqrt(1 − γ_t)
    coef_y0 = co["sqrt_g_s"] - co["c_eps"] * co["sqrt_g_t"] / co["sqrt_1m_g_t"]
    coef_yt = co["c_eps"] / co["sqrt_1m_g_t"]
    torch.testing.assert_close(coef_y0, g_s.sqrt() * (1 - a) / (1 - g_t))
    torch.testing.assert_close(coef_yt, a.sqrt() * (1 - g_s) / (1 - g_t))
    torch.testing.assert_close(co["sigma"] ** 2, (1 - g_s) * (1 - a) / (1 - g_t))
    ddim = step_coefficients(g_t.log(), g_s.log(), eta=0.0)
    assert torch.all(ddim["sigma"] == 0)
    torch.testing.assert_close(ddim["c_eps"], (1 - g_s).sqrt())


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_one_step_keeps_the_forward_marginal(eta) -> None:
    """From y_t ~ q(y_t | y0) with the true ε̂, y_s must follow q(y_s | y0) = N(√γ_s y0, 1 − γ_s)."""
    gen = torch.Generator().manual_seed(0)
    n, y0 = 400_000, 0.7
    g_t, g_s = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    eps = torch.randn(n, generator=gen, dtype=torch.float64)
    y_t = g_t.sqrt() * y0 + (1 - g_t).sqrt() * eps
    co = step_coefficients(g_t.log(), g_s.log(), eta)
    z = torch.randn(n, generator=gen, dtype=torch.float64)
    y0_hat = (y_t - co["sqrt_1m_g_t"] * eps) / co["sqrt_g_t"]  # the sampler's ŷ0
    y_s = co["sqrt_g_s"] * y0_hat + co["c_eps"] * eps + co["sigma"] * z
    assert abs(y_s.mean() - g_s.sqrt() * y0) < 5e-3
    assert abs(y_s.var() - (1 - g_s)) < 5e-3


def test_float64_models_sample_in_float64() -> None:
    model = tiny_model("learned-exact", residual=True).double()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    out = model.sample(x, steps=3, samples=2, generator=torch.Generator().manual_seed(0))
    assert out.samples.dtype == torch.float64 and torch.isfinite(out.samples).all()
    terms = model.loss(x, torch.randn(1, 1, 8, 8, dtype=torch.float64))
    assert all(v.dtype == torch.float64 for v in terms.values())


def test_oracle_with_zmd_returns_the_target() -> None:
    model = tiny_model("learned-exact", zmd=True)
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    out = model.sample(x, steps=10, samples=2, eps_fn=_oracle(model, x, y, 2))
    torch.testing.assert_close(out.mean, y, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["learned", "learned-exact", "fixed-cosine"])
def test_equal_generators_give_equal_samples(kind) -> None:
    model = tiny_model(kind, residual=True)
    with torch.no_grad():  # a non-zero denoiser, so samples depend on it too
        model.denoiser.conv_out.weight.normal_(0, 0.1)
    x = torch.randn(2, 1, 8, 8)
    a = model.sample(x, steps=6, samples=3, generator=torch.Generator().manual_seed(7))
    b = model.sample(x, steps=6, samples=3, generator=torch.Generator().manual_seed(7))
    c = model.sample(x, steps=6, samples=3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    assert a.samples.shape == (2, 3, 1, 8, 8)
    assert a.mean.shape == a.std.shape == a.gamma_half.shape == (2, 1, 8, 8)
    torch.testing.assert_close(a.mean, a.samples.mean(1))
    assert torch.all(a.std > 0)


def test_samples_are_drawn_independently_within_the_batch() -> None:
    model = tiny_model("fixed-linear")
    out = model.sample(torch.zeros(1, 1, 8, 8), steps=5, samples=4,
                       generator=torch.Generator().manual_seed(0))
    assert not torch.equal(out.samples[0, 0], out.samples[0, 1])


@pytest.mark.parametrize("steps", [20, 50, 200])
@pytest.mark.parametrize("kind", ["learned", "learned-exact"])
def test_large_lambda_steps_never_amplify(kind, steps) -> None:
    """METHOD.md pitfall: with large λ, γ underflows near t = 1; every step must keep
    γ_s ≥ γ_t and finite coefficients, and sampling must stay bounded."""
    model = tiny_model(kind)
    if kind == "learned":  # also make the faithful ρ non-monotone (negative free bias)
        with torch.no_grad():
            model.schedule.rho_net.b3.fill_(-3.0)
    lam = torch.full((1, 1, 4, 4), 80.0)
    lam[..., :2, :] = 0.05  # some pixels barely noised at all
    log_g = model.schedule.log_gamma_grid(lam, steps)
    assert torch.all(log_g[:-1] >= log_g[1:])
    assert log_g.min() >= math.log(GAMMA_MIN) - 1e-6 and log_g.max() <= math.log(GAMMA_MAX) + 1e-6
    for i in range(steps, 0, -1):
        for eta in (0.0, 1.0):
            co = step_coefficients(log_g[i], log_g[i - 1], eta)
            for name, v in co.items():
                assert torch.isfinite(v).all(), name
            assert torch.all(co["sqrt_g_s"] ** 2 + co["c_eps"] ** 2 + co["sigma"] ** 2 <= 1 + 1e-5)
    model.schedule.lam = lambda x: lam.expand(x.shape[0], -1, -1, -1)  # type: ignore[method-assign]
    x, y = torch.zeros(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    out = model.sample(x, steps=steps, samples=2, generator=torch.Generator().manual_seed(0),
                 eps_fn=_oracle(model, x, y, 2))
    torch.testing.assert_close(out.mean, y, rtol=0, atol=1e-4)


def test_beta_cumprod_grid_is_the_cumulative_product() -> None:
    model = tiny_model("learned")
    lam = torch.full((1, 1, 1, 1), 0.7)
    steps = 8
    log_g = model.schedule.log_gamma_grid(lam, steps, grid="beta-cumprod")
    t = torch.linspace(0, 1, steps + 1)[:-1]
    alpha = (1 - 0.7 * model.schedule.tau(t) / steps).clamp(1e-6, 0.99999)
    expected = torch.cat([torch.ones(1), torch.cumprod(alpha, 0)]).clamp(GAMMA_MIN, GAMMA_MAX)
    expected = torch.flip(torch.cummax(torch.flip(expected, [0]), 0).values, [0])
    torch.testing.assert_close(log_g.exp().flatten(), expected, rtol=1e-5, atol=1e-7)


def test_network_calls_per_image() -> None:
    x = torch.randn(1, 1, 8, 8)
    assert tiny_model("learned").sample(x, steps=7).network_calls == 8
    assert tiny_model("fixed-cosine").sample(x, steps=7).network_calls == 7
    assert tiny_model("learned", zmd=True).sample(x, steps=7).network_calls == 9


def test_bad_sampler_arguments_are_rejected() -> None:
    model = tiny_model("fixed-linear")
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="eta"):
        model.sample(x, steps=3, eta=-0.1)
    with pytest.raises(ValueError, match="steps"):
        model.sample(x, steps=0)
    with pytest.raises(ValueError, match="grid"):
        model.sample(x, steps=3, grid="karras")


def test_clip_bounds_the_denoised_estimate_and_keeps_the_oracle_exact() -> None:
    model = tiny_model("fixed-cosine", residual=True, target_scale=0.5)
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    clip = float((y - x).abs().max()) + 0.1
    out = model.sample(x, steps=20, samples=2, clip=clip, eps_fn=_oracle(model, x, y, 2))
    torch.testing.assert_close(out.mean, y, rtol=0, atol=1e-4)
    # a denoiser that predicts no noise at all: ŷ0 = y_t / sqrt(γ) explodes without clip
    wild = model.sample(x, steps=20, samples=2, generator=torch.Generator().manual_seed(0),
                  eps_fn=lambda y_t, g, i: torch.zeros_like(y_t))
    tame = model.sample(x, steps=20, samples=2, generator=torch.Generator().manual_seed(0),
                  clip=1.0, eps_fn=lambda y_t, g, i: torch.zeros_like(y_t))
    assert (wild.samples - x[:, None]).abs().max() > 10
    assert (tame.samples - x[:, None]).abs().max() <= 1.0 + 1e-5
    with pytest.raises(ValueError, match="clip"):
        model.sample(x, steps=2, clip=0.0)


@pytest.mark.parametrize("kind", ["fixed-cosine", "learned"])
@pytest.mark.parametrize("eta", [1.0, 0.0, 0.5])
def test_exact_denoiser_reproduces_gaussian_data(kind, eta) -> None:
    """For y0 ~ N(μ, s²) the optimal ε̂ is known in closed form; with it every sampler must
    return samples distributed as the data (up to the discretisation of 200 steps)."""
    mu, s = 0.7, 0.3
    model = tiny_model(kind)

    def eps_fn(y, g, i):
        return (1 - g).sqrt() * (y - g.sqrt() * mu) / (g * s * s + 1 - g)

    out = model.sample(torch.zeros(1, 1, 8, 8), steps=200, samples=500,
                 generator=torch.Generator().manual_seed(0), eta=eta, eps_fn=eps_fn)
    v = out.samples.flatten()
    assert abs(v.mean().item() - mu) < 0.01
    assert abs(v.std().item() - s) < 0.012


def test_gamma_min_raises_the_grid_floor_and_sampling_starts_there() -> None:
    """``gamma_min`` floors the grid (only where it was below) and the sampler's first
    denoiser call sees γ = gamma_min; the oracle still returns the target."""
    model = tiny_model("learned-exact")
    lam = torch.full((1, 1, 4, 4), 12.0)  # drifted: γ(1) = e^-12 ≈ 6e-6
    plain = model.schedule.log_gamma_grid(lam, 20)
    floored = model.schedule.log_gamma_grid(lam, 20, gamma_min=1e-3)
    assert plain.min() < math.log(1e-3) - 1
    torch.testing.assert_close(floored, plain.clamp(min=math.log(1e-3)))
    assert torch.all(floored[:-1] >= floored[1:])
    with pytest.raises(ValueError, match="gamma_min"):
        model.schedule.log_gamma_grid(lam, 20, gamma_min=1.0)
    model.schedule.lam = lambda x: lam.expand(x.shape[0], -1, -1, -1)  # type: ignore[method-assign]
    x, y = torch.zeros(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    oracle, seen = _oracle(model, x, y, 2), []

    def eps_fn(y_t, gamma_t, step):
        seen.append(float(gamma_t.min()))
        return oracle(y_t, gamma_t, step)

    out = model.sample(x, steps=20, samples=2, generator=torch.Generator().manual_seed(0),
                       gamma_min=1e-3, eps_fn=eps_fn)
    assert seen[0] == pytest.approx(1e-3, rel=1e-4)
    torch.testing.assert_close(out.mean, y, rtol=0, atol=1e-4)


def test_sample_config_passes_gamma_min() -> None:
    from microdiff.config import SampleConfig

    assert SampleConfig().options()["gamma_min"] is None
    assert SampleConfig(gamma_min=1e-3).options()["gamma_min"] == 1e-3
    with pytest.raises(ValueError):
        SampleConfig(gamma_min=0.0)


@pytest.mark.parametrize("kind", ["fixed-cosine", "learned"])
def test_few_step_samplers_keep_the_mean_and_narrow_the_spread(kind) -> None:
    """Issue 20's few-step sampling, with the exact Gaussian denoiser (no model error): 2, 4
    and 20 ancestral steps all return the data mean, and the samples' std grows with the
    steps towards s (measured: 0.27 s, 0.51 s, 0.82 s), which is why a calibration must be
    fitted with the steps the user predicts with."""
    mu, s = 0.7, 0.3

    def eps_fn(y, g, i):
        return (1 - g).sqrt() * (y - g.sqrt() * mu) / (g * s * s + 1 - g)

    stds = []
    for steps in (2, 4, 20):
        out = tiny_model(kind).sample(
            torch.zeros(1, 1, 8, 8), steps=steps, samples=500, generator=torch.Generator().manual_seed(0),
            eta=1.0, eps_fn=eps_fn)
        v = out.samples.flatten()
        assert abs(v.mean().item() - mu) < 0.01, (steps, v.mean().item())
        stds.append(v.std().item() / s)
        assert out.network_calls >= steps
    assert stds[0] < stds[1] < stds[2] < 0.9, stds
    assert 0.45 < stds[1] < 0.58, stds  # 4 steps: about half the posterior's spread
