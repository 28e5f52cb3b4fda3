"""Data consistency for two-shot phase: the weak-object transfer function and a Wiener step.

A network's phase estimate φ₀ rarely explains the measured pair exactly. Its error e = φ − φ₀
shows in the residual of the pair difference, ``R = (I₊ − I₋) − (I₊ − I₋)(φ₀)``; for a weak
phase error, per spatial frequency f,

    R̂(f) = T(f) ê(f) + n̂(f),   T(f) = 4 sin χ(f),   χ(f) = 2π Δz (n/λ − sqrt((n/λ)² − |f|²))

(the defocus contrast transfer function, CTF, of the pair; χ is the defocus phase of
angular-spectrum propagation, T = 0 for evanescent |f| ≥ n/λ; TIE is its small-angle limit
T ≈ 4πλΔz|f|²/n). :func:`wiener_data_consistency` estimates e from R by Wiener
deconvolution, ``ê = T R̂ S / (T² S + N)``, with N the noise power of R̂ (white: from the
pair's noise σ̂) and S the power of the network's error, estimated from the residual itself
in rings of |f| (one FFT pixel wide): ``S = max(P − N (1 + z/√m), 0) / ⟨T²⟩`` with P the
residual's mean power over the ring's m frequencies and z = :data:`WIENER_THRESHOLD` (a ring
must exceed the noise significantly before it is trusted). Rings where the network already
explains the data (P ≈ N) keep φ₀; rings where it does not follow the intensities, as far as
the noise allows; frequencies the pair does not see (T ≈ 0, evanescent) keep φ₀. No weight
is tuned per image: z was chosen on validation maps (``benchmarks/qpi_validation.py``).
Shapes ``[..., H, W]``, phase in radians, float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .phase import (
    ADAPTIVE_TIE_FLOOR,
    DATA_CONSISTENCY_GAIN,
    TwoShotConfig,
    frequencies,
    tie_data_consistency,
    two_shot,
    two_shot_noise,
)

#: a ring of frequencies is trusted when its residual power exceeds the noise's by z/√m
#: (m its number of frequencies); z = 3–10 within 0.002 rad on validation maps, 4 the best
WIENER_THRESHOLD = 4.0


def pair_ctf(shape: tuple[int, int], cfg: TwoShotConfig | None = None, dtype=torch.float64) -> Tensor:
    """``T(f) = 4 sin χ(f)`` ``[H, W]``: the FFT of ``I₊ − I₋`` per unit FFT of a weak phase
    φ (|φ| ≪ 1 rad) on the image's FFT grid; 0 for evanescent frequencies."""
    cfg = cfg or TwoShotConfig()
    fy, fx = frequencies(shape, cfg.pixel_um, dtype=dtype)
    f2 = fx.square() + fy.square()
    k = cfg.medium_index / cfg.wavelength_um
    chi = 2 * math.pi * cfg.defocus_um * (k - (k * k - f2).clamp_min(0).sqrt())
    return 4 * torch.sin(chi) * (f2 < k * k)


def frequency_rings(shape: tuple[int, int]) -> tuple[Tensor, int]:
    """Ring index ``[H, W]`` of every FFT frequency (|f| in units of the coarser axis' FFT
    pixel, rounded) and the number of rings."""
    h, w = shape
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    ring = ((fx.square() + fy.square()).sqrt() * min(h, w)).round().long()
    return ring, int(ring.max()) + 1


def _ring_mean(values: Tensor, ring: Tensor, n: int) -> Tensor:
    """Mean of ``values`` ``[H, W]`` over each ring: ``[n]``."""
    total = torch.zeros(n, dtype=values.dtype).index_add_(0, ring.flatten(), values.flatten())
    return total / torch.bincount(ring.flatten(), minlength=n).clamp_min(1).to(values.dtype)


def wiener_data_consistency(phi: Tensor, i_minus: Tensor, i_plus: Tensor, cfg: TwoShotConfig | None = None,
                            noise_std: float | None = None, threshold: float = WIENER_THRESHOLD) -> Tensor:
    """φ₀ = ``phi`` ``[H, W]`` (rad) corrected towards the intensities ``i_minus``, ``i_plus``
    ``[H, W]`` (any common scale: the pair is divided by its mean) by one Wiener step (module
    docstring). ``noise_std``: each shot's noise std relative to its mean intensity (default:
    :func:`~microdiff.data.phase.two_shot_noise` of the pair). Zero mean, like TIE. float64."""
    cfg = cfg or TwoShotConfig()
    pair = torch.stack([i_minus, i_plus]).to(torch.float64)
    pair = pair / pair.mean().clamp_min(1e-12)
    phi = phi.to(torch.float64)
    phi = phi - phi.mean()
    sigma = two_shot_noise(i_minus, i_plus) if noise_std is None else noise_std
    shape = tuple(phi.shape[-2:])
    ctf, (ring, n) = pair_ctf(shape, cfg), frequency_rings(shape)
    residual = pair - two_shot(phi, cfg)
    r_hat = torch.fft.fft2(residual[1] - residual[0])
    noise = 2 * sigma**2 * shape[0] * shape[1]  # E|FFT|² of the difference of two shots' white noise
    count = torch.bincount(ring.flatten(), minlength=n).to(torch.float64)
    excess = _ring_mean(r_hat.abs().square(), ring, n) - noise * (1 + threshold / count.sqrt())
    error_power = (excess.clamp_min(0) / _ring_mean(ctf.square(), ring, n).clamp_min(1e-30))[ring]
    gain = ctf * error_power / (ctf.square() * error_power + noise).clamp_min(1e-30)
    gain[0, 0] = 0.0  # the mean phase is not determined
    return phi + torch.fft.ifft2(r_hat * gain).real


def data_consistency(phi: Tensor, i_minus: Tensor, i_plus: Tensor, method: str = "tie+wiener",
                     noise_std: float | None = None, cfg: TwoShotConfig | None = None) -> Tensor:
    """``phi`` ``[..., H, W]`` (rad, one pair's estimates) moved towards the pair ``[H, W]``:
    ``tie``, one TIE Gauss-Newton step (:func:`~microdiff.data.phase.tie_data_consistency`,
    α = ``DATA_CONSISTENCY_GAIN`` · σ̂², floored); ``tie+wiener``, then the Wiener step on each
    estimate. ``noise_std``: σ̂ (default: :func:`~microdiff.data.phase.two_shot_noise`). float64."""
    sigma = two_shot_noise(i_minus, i_plus) if noise_std is None else noise_std
    alpha = max(DATA_CONSISTENCY_GAIN * sigma**2, ADAPTIVE_TIE_FLOOR)
    out = tie_data_consistency(phi, i_minus, i_plus, cfg, alpha)
    if method == "tie+wiener":
        flat = out.reshape(-1, *out.shape[-2:])
        each = [wiener_data_consistency(p, i_minus, i_plus, cfg, sigma) for p in flat]
        out = torch.stack(each).reshape(out.shape)
    return out
