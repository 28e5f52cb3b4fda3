"""A pure sampler: DDIM steps with stochasticity η (η = 1: ancestral DDPM) on a per-pixel
log-γ grid, in the diffused units of a model.

:func:`sample_loop` knows nothing of models, schedules or normalisation: it takes a
denoiser callable ``ε̂(y_t, γ_t, step)``, the grid log γ ``[N + 1, B, C, H, W]`` (from
:meth:`microdiff.schedule.Schedule.log_gamma_grid`: non-increasing in t, clamped, so no
step can amplify the sample), a generator, η and an optional bound on |ŷ0|, and returns
ŷ0 after the last step. The model (:meth:`microdiff.diffusion.CVDM.sample`) builds the
grid, replicates K samples, maps in and out of its diffused units and computes the
K-sample statistics. Everything runs in the grid's precision (float32 or float64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

#: ε̂ = denoise(y_t, γ_t, step): ``[B, C, H, W]`` tensors in diffused units; step counts down N..1.
Denoiser = Callable[[Tensor, Tensor, int], Tensor]


@dataclass
class SampleOutput:
    """Posterior samples and their statistics, in the target's (normalised) units.

    mean: the point estimate ``[B, C, H, W]`` (``point_estimate``: the mean of the K samples,
    or ZMD's mean network μ(x)); std: over the K samples (K − 1; zeros when K = 1).
    samples: ``[B, K, C, H, W]``.
    gamma_half: the learned schedule map γ(t = 0.5, x), ``[B, C, H, W]``.
    network_calls: network evaluations per input image (each covering all K samples).
    sample_mean: the mean of the K samples (equal to ``mean`` unless another estimate is used).
    """

    mean: Tensor
    std: Tensor
    samples: Tensor
    gamma_half: Tensor
    network_calls: int
    sample_mean: Tensor | None = None


def sample_statistics(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std (K − 1; zeros for K = 1) over the K axis of ``[B, K, C, H, W]``."""
    std = samples.std(dim=1, correction=1) if samples.shape[1] > 1 else torch.zeros_like(samples[:, 0])
    return samples.mean(dim=1), std


def check_eta(eta: float) -> None:
    """η ∈ [0, 1]: above 1 the step's variance exceeds 1 − γ_s and the marginals break."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: ancestral), got {eta}")


def _randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise drawn on the generator's device, returned on ``like``'s."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def step_coefficients(log_g_t: Tensor, log_g_s: Tensor, eta: float) -> dict[str, Tensor]:
    """Coefficients of one step from t to s < t (DDIM with η; η = 1 is ancestral DDPM).

    y0_hat = (y_t − c_eps_in · ε̂) / sqrt(γ_t);
    y_s = sqrt(γ_s) · y0_hat + c_eps · ε̂ + sigma · z, with
    sigma² = η² (1 − γ_s)/(1 − γ_t) · (1 − γ_t/γ_s) and c_eps = sqrt(1 − γ_s − sigma²).
    """
    check_eta(eta)
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
def sample_loop(denoise: Denoiser, log_gamma: Tensor, generator: torch.Generator | None = None,
                eta: float = 1.0, clip: float | None = None, progress: bool = False,
                on_step: Callable[[], None] | None = None) -> Tensor:
    """ŷ0 ``[B, C, H, W]`` after N steps down the grid ``log_gamma`` ``[N + 1, B, C, H, W]``.

    Starts from y_N ~ N(0, I) (drawn from ``generator``). eta: 0 deterministic (DDIM), 1
    ancestral (DDPM posterior steps). clip: if set, |ŷ0| ≤ clip in diffused units (SR3/DDPM's
    ``clip_denoised``), with ε̂ recomputed from the clipped ŷ0; keeps early high-noise steps
    (1/sqrt(γ) up to 1000) from throwing the sample out of the data range. progress: a
    progress bar over the steps; on_step: called after each step. Same generator state ⇒
    same output.
    """
    check_eta(eta)
    if clip is not None and clip <= 0:
        raise ValueError("clip must be positive (or None)")
    steps = log_gamma.shape[0] - 1
    y = _randn(log_gamma.shape[1:], generator, log_gamma)
    y0_hat = y
    for i in tqdm(range(steps, 0, -1), desc="sampling", disable=not progress, dynamic_ncols=True):
        co = step_coefficients(log_gamma[i], log_gamma[i - 1], eta)
        eps_hat = denoise(y, log_gamma[i].exp(), i)
        y0_hat = (y - co["sqrt_1m_g_t"] * eps_hat) / co["sqrt_g_t"]
        if clip is not None:  # keep ŷ0 in the data range, and ε̂ consistent with it
            y0_hat = y0_hat.clamp(-clip, clip)
            eps_hat = (y - co["sqrt_g_t"] * y0_hat) / co["sqrt_1m_g_t"]
        if i > 1:
            z = _randn(y.shape, generator, y) if eta > 0 else 0.0
            y = co["sqrt_g_s"] * y0_hat + co["c_eps"] * eps_hat + co["sigma"] * z
        if on_step is not None:
            on_step()
    return y0_hat
