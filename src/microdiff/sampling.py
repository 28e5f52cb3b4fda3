"""Samplers over any schedule: ancestral (DDPM) and DDIM-style (η) on a time grid.

The per-pixel γ grid comes from the same ``γ(t, x) = exp(−λ(x) ρ(t))`` used in training:
λ(x) is computed once per image, ρ once per grid point, and the denoiser is called once
per step for all K samples together (network calls per image: 1 schedule U-Net +
N denoiser steps, + 1 ZMD mean net). Everything runs in float32, in log γ to avoid
underflow; the grid is forced non-increasing in t (γ_s ≥ γ_t for s < t) so no step can
amplify the sample, whatever a faithfully learned (not exactly monotone) schedule does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .schedule import GAMMA_MAX, GAMMA_MIN, Schedule, full_precision_math, working_dtype

if TYPE_CHECKING:
    from .diffusion import CVDM

SAMPLERS = ("ancestral", "ddim")
GRIDS = ("gamma", "beta-cumprod")


@dataclass
class SampleOutput:
    """Posterior samples and their statistics, in the target's (normalised) units.

    mean, std: ``[B, C, H, W]`` over the K samples (std uses K − 1; zeros when K = 1).
    samples: ``[B, K, C, H, W]``.
    gamma_half: the learned schedule map γ(t = 0.5, x), ``[B, C, H, W]``.
    network_calls: network evaluations per input image (each covering all K samples).
    """

    mean: Tensor
    std: Tensor
    samples: Tensor
    gamma_half: Tensor
    network_calls: int


def _randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise drawn on the generator's device, returned on ``like``'s."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


@full_precision_math
def log_gamma_grid(schedule: Schedule, lam: Tensor, steps: int, grid: str = "gamma") -> Tensor:
    """log γ on the grid t_i = i / N, i = 0..N: ``[N + 1, B, C, H, W]`` (or broadcastable).

    ``gamma``: log γ(t_i, x) from the training schedule.
    ``beta-cumprod``: the authors' discretisation, γ_i = ∏_{j<i} (1 − β(t_j, x) / N),
    each factor clipped to [1e-6, 0.99999].
    Both are clamped to [log GAMMA_MIN, log GAMMA_MAX] and made non-increasing in i.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    t = torch.linspace(0.0, 1.0, steps + 1, device=lam.device)
    t = t.to(working_dtype(lam))
    if grid == "gamma":
        rho = schedule.rho(t)
        log_g = -lam.unsqueeze(0) * rho.view(-1, 1, 1, 1, 1)
    elif grid == "beta-cumprod":
        tau = schedule.tau(t[:-1])
        beta = lam.unsqueeze(0) * tau.view(-1, 1, 1, 1, 1)
        log_alpha = torch.log((1.0 - beta / steps).clamp(1e-6, 0.99999))
        zero = torch.zeros_like(log_alpha[:1])
        log_g = torch.cat([zero, torch.cumsum(log_alpha, dim=0)], dim=0)
    else:
        raise ValueError(f"unknown grid {grid!r}; choose one of {', '.join(GRIDS)}")
    log_g = log_g.clamp(math.log(GAMMA_MIN), math.log(GAMMA_MAX))
    # γ_s ≥ γ_t for s < t: running max from t = 1 back to t = 0.
    return torch.flip(torch.cummax(torch.flip(log_g, [0]), dim=0).values, [0])


def _check_eta(eta: float) -> None:
    """η ∈ [0, 1]: above 1 the step's variance exceeds 1 − γ_s and the marginals break."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: ancestral), got {eta}")


def step_coefficients(log_g_t: Tensor, log_g_s: Tensor, eta: float) -> dict[str, Tensor]:
    """Coefficients of one step from t to s < t (DDIM with η; η = 1 is ancestral DDPM).

    y0_hat = (y_t − c_eps_in · ε̂) / sqrt(γ_t);
    y_s = sqrt(γ_s) · y0_hat + c_eps · ε̂ + sigma · z, with
    sigma² = η² (1 − γ_s)/(1 − γ_t) · (1 − γ_t/γ_s) and c_eps = sqrt(1 − γ_s − sigma²).
    """
    _check_eta(eta)
    g_t, g_s = log_g_t.exp(), log_g_s.exp()
    ratio = torch.exp((log_g_t - log_g_s).clamp(max=0.0))  # γ_t/γ_s ≤ 1
    one_m_t = -torch.expm1(log_g_t)
    one_m_s = -torch.expm1(log_g_s)
    var = (eta**2) * one_m_s / one_m_t * (1.0 - ratio)
    return {
        "sqrt_g_t": g_t.sqrt(),
        "sqrt_1m_g_t": one_m_t.sqrt(),
        "sqrt_g_s": g_s.sqrt(),
        "c_eps": (one_m_s - var).clamp(min=0.0).sqrt(),
        "sigma": var.sqrt(),
    }


@torch.no_grad()
def sample(
    model: CVDM,
    x: Tensor,
    steps: int = 50,
    samples: int = 1,
    generator: torch.Generator | None = None,
    sampler: str = "ancestral",
    eta: float = 1.0,
    grid: str = "gamma",
    clip: float | None = None,
    eps_fn: Callable[[Tensor, Tensor, int], Tensor] | None = None,
    progress: bool = False,
    on_step: Callable[[], None] | None = None,
) -> SampleOutput:
    """Draw K posterior samples of y for each condition x ``[B, C_in, H, W]``.

    sampler: ``ancestral`` (DDPM posterior steps, stochastic) or ``ddim`` (η sets the
    stochasticity: 0 deterministic, 1 ancestral). grid: see :func:`log_gamma_grid`.
    clip: if set, |ŷ0| ≤ clip in the units of the diffused part of y (the residual
    y − x with the residual target, else y; minus μ(x) under ZMD; before
    ``target_scale``), as SR3/DDPM's
    ``clip_denoised``; ε̂ is recomputed from the clipped ŷ0. Keeps early high-noise
    steps (1/sqrt(γ) up to 1000) from throwing the sample out of the data range.
    progress: show a progress bar over the steps; on_step: called after each step (for
    progress bars of front ends, e.g. the napari widget).
    eps_fn: optional replacement for the denoiser, ``eps_fn(y_t, gamma_t, step) -> ε̂``
    in diffused units (used by the oracle test). Same generator state ⇒ same output.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if clip is not None and clip <= 0:
        raise ValueError("clip must be positive (or None)")
    eta = 1.0 if sampler == "ancestral" else float(eta)
    _check_eta(eta)
    x = x.to(working_dtype(x))
    b, k = x.shape[0], samples
    c, h, w = model.schedule.out_channels, x.shape[-2], x.shape[-1]
    device = x.device

    lam = model.schedule.lam(x)  # the schedule U-Net: once per image
    log_g = log_gamma_grid(model.schedule, lam, steps, grid)
    log_g = log_g.expand(steps + 1, b, c, h, w).repeat_interleave(k, dim=1)
    mu = model.predict_mean(x)
    x_k = x.repeat_interleave(k, dim=0)
    mu_k = None if mu is None else mu.repeat_interleave(k, dim=0)

    y = _randn((b * k, c, h, w), generator, x)
    y0_hat = y
    for i in tqdm(range(steps, 0, -1), desc="sampling", disable=not progress, dynamic_ncols=True):
        co = step_coefficients(log_g[i], log_g[i - 1], eta)
        gamma_t = log_g[i].exp()
        if eps_fn is None:
            eps_hat = model.eps_hat(y, x_k, gamma_t, mu_k)
        else:
            eps_hat = eps_fn(y, gamma_t, i)
        y0_hat = (y - co["sqrt_1m_g_t"] * eps_hat) / co["sqrt_g_t"]
        if clip is not None:  # keep ŷ0 in the data range, and ε̂ consistent with it
            y0_hat = y0_hat.clamp(-clip / model.scale, clip / model.scale)
            eps_hat = (y - co["sqrt_g_t"] * y0_hat) / co["sqrt_1m_g_t"]
        if i > 1:
            z = _randn(y.shape, generator, x) if eta > 0 else 0.0
            y = co["sqrt_g_s"] * y0_hat + co["c_eps"] * eps_hat + co["sigma"] * z
        if on_step is not None:
            on_step()

    out = model.from_diffused(x_k, y0_hat, mu_k).view(b, k, c, h, w)
    std = out.std(dim=1, correction=1) if k > 1 else torch.zeros_like(out[:, 0])
    gamma_half = model.schedule.gamma_at(torch.full((b,), 0.5, device=device), lam)
    calls = steps + int(model.schedule.uses_network) + int(mu is not None)
    return SampleOutput(out.mean(dim=1), std, out, gamma_half.expand(b, c, h, w), calls)
