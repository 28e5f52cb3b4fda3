"""Quantitative phase imaging: Fresnel propagation and the QPI forward models (torch).

A thin, transparent specimen is a pure phase object ``U0 = exp(iφ)`` (φ in radians).
Defocusing it by ``z`` µm is angular-spectrum propagation (exact scalar diffraction):

    U(z) = F⁻¹[ F[U0] · H_z ],   H_z(f) = exp(i 2π z sqrt((n/λ)² − |f|²))   for |f| < n/λ

with f in cycles/µm on the image's FFT grid, λ the vacuum wavelength (µm) and n the
refractive index of the medium. Components with |f| ≥ n/λ are evanescent: they decay
within a fraction of a wavelength, and ``evanescent="drop"`` (default, physical) removes
them; ``"keep"`` passes them unchanged, which makes propagation exactly unitary. A camera
records the intensity ``|U(z)|²`` (1 everywhere for a flat field).

Acquisition models (METHOD.md, "Applications"; della Maggiora et al. 2024):

- :func:`two_shot`: the intensities at ``−Δz`` and ``+Δz`` of one wavelength (default
  λ = 0.521 µm, Δz = 1 µm, pixel 0.21 µm);
- :func:`polychromatic`: one RGB shot; channel c sees the spectrum through a Gaussian
  response (centre, width) and is defocused by its own ``z_c`` (chromatic focal shift),
  integrated over wavelengths (default 50 in 0.4–0.7 µm).

Everything runs on the tensors' device (CPU or GPU) in complex64 by default
(``torch.complex128`` for float64 input). Shapes: phase ``[..., H, W]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

EVANESCENT = ("drop", "keep")


def frequencies(shape: tuple[int, int], pixel_um: float, device=None, dtype=torch.float32
                ) -> tuple[Tensor, Tensor]:
    """Spatial frequencies (fy ``[H, 1]``, fx ``[1, W]``) in cycles/µm on the FFT grid."""
    h, w = shape
    fy = torch.fft.fftfreq(h, d=pixel_um, device=device, dtype=dtype)[:, None]
    fx = torch.fft.fftfreq(w, d=pixel_um, device=device, dtype=dtype)[None, :]
    return fy, fx


def transfer_function(shape: tuple[int, int], pixel_um: float, wavelength_um: float | Tensor,
                      z_um: float | Tensor, medium_index: float = 1.0, evanescent: str = "drop",
                      device=None, dtype=torch.float32) -> Tensor:
    """Angular-spectrum transfer function ``H_z`` ``[..., H, W]`` (complex); ``wavelength_um``
    and ``z_um`` may be tensors ``[...]`` that broadcast (one function per entry)."""
    if evanescent not in EVANESCENT:
        raise ValueError(f"evanescent must be one of {EVANESCENT}, got {evanescent!r}")
    fy, fx = frequencies(shape, pixel_um, device, dtype)
    lam = torch.as_tensor(wavelength_um, device=device, dtype=dtype)[..., None, None]
    z = torch.as_tensor(z_um, device=device, dtype=dtype)[..., None, None]
    k2 = (medium_index / lam) ** 2 - (fx.square() + fy.square())
    propagating = k2 > 0
    phase = 2 * math.pi * z * k2.clamp_min(0).sqrt()
    h = torch.polar(torch.ones_like(phase), phase)
    if evanescent == "drop":
        h = h * propagating
    return h


def propagate(field: Tensor, pixel_um: float, wavelength_um: float | Tensor, z_um: float | Tensor,
              medium_index: float = 1.0, evanescent: str = "drop") -> Tensor:
    """The complex ``field`` ``[..., H, W]`` propagated by ``z_um`` µm (negative: backwards)."""
    real = torch.float64 if field.dtype == torch.complex128 else torch.float32
    h = transfer_function(tuple(field.shape[-2:]), pixel_um, wavelength_um, z_um, medium_index,
                          evanescent, field.device, real)
    return torch.fft.ifft2(torch.fft.fft2(field) * h)


def phase_object(phi: Tensor) -> Tensor:
    """The field ``exp(iφ)`` of a pure phase object, ``φ`` ``[..., H, W]`` in radians."""
    return torch.polar(torch.ones_like(phi), phi)


def defocus_intensity(phi: Tensor, pixel_um: float, wavelength_um: float | Tensor,
                      z_um: float | Tensor, medium_index: float = 1.0) -> Tensor:
    """``|U(z)|²`` of the phase object ``φ`` ``[..., H, W]`` (1 for a flat field)."""
    return propagate(phase_object(phi), pixel_um, wavelength_um, z_um, medium_index).abs().square()


@dataclass
class TwoShotConfig:
    """Two defocused intensities of one wavelength (the paper's setting by default)."""

    pixel_um: float = 0.21
    wavelength_um: float = 0.521
    defocus_um: float = 1.0  # the pair is taken at −Δz and +Δz
    medium_index: float = 1.0


def two_shot(phi: Tensor, cfg: TwoShotConfig | None = None) -> Tensor:
    """Noise-free intensities ``[..., 2, H, W]`` at ``(−Δz, +Δz)`` of ``φ`` ``[..., H, W]``."""
    cfg = cfg or TwoShotConfig()
    z = torch.tensor([-cfg.defocus_um, cfg.defocus_um], device=phi.device, dtype=phi.dtype)
    return defocus_intensity(phi[..., None, :, :], cfg.pixel_um, cfg.wavelength_um, z, cfg.medium_index)


@dataclass
class PolychromaticConfig:
    """One RGB shot: Gaussian spectral responses and a defocus per channel."""

    pixel_um: float = 0.21
    centres_um: tuple[float, ...] = (0.630, 0.550, 0.450)
    widths_um: tuple[float, ...] = (0.05, 0.05, 0.05)  # the paper draws each ~U(0.01, 0.1)
    defocus_um: tuple[float, ...] = (1.0, 1.5, 2.0)  # the paper draws each ~U(0.01, 3)
    spectrum_um: tuple[float, float] = (0.4, 0.7)
    n_wavelengths: int = 50
    medium_index: float = 1.0
    wavelengths_um: tuple[float, ...] | None = field(default=None)  # overrides the grid

    def grid(self) -> tuple[float, ...]:
        if self.wavelengths_um is not None:
            return tuple(self.wavelengths_um)
        lo, hi = self.spectrum_um
        return tuple(torch.linspace(lo, hi, self.n_wavelengths, dtype=torch.float64).tolist())


def spectral_responses(wavelengths_um: Tensor, centres_um: Tensor, widths_um: Tensor) -> Tensor:
    """Gaussian responses ``[C, L]`` of C channels at L wavelengths, each row summing to 1
    (a channel whose response is numerically zero everywhere gets its nearest wavelength)."""
    d = wavelengths_um[None, :] - centres_um[:, None]
    r = torch.exp(-0.5 * (d / widths_um[:, None]).square())
    empty = r.sum(-1) <= 0
    if empty.any():
        nearest = torch.nn.functional.one_hot(d.abs().argmin(-1), wavelengths_um.numel()).to(r.dtype)
        r = torch.where(empty[:, None], nearest, r)
    return r / r.sum(-1, keepdim=True)


def polychromatic(phi: Tensor, cfg: PolychromaticConfig | None = None,
                  responses: Tensor | None = None) -> Tensor:
    """Noise-free RGB intensities ``[..., C, H, W]`` of ``φ`` ``[..., H, W]``: channel c is
    ``Σ_λ r_c(λ) |U_λ(z_c)|²`` with responses ``r`` ``[C, L]`` summing to 1 over λ (default:
    :func:`spectral_responses` of the config)."""
    cfg = cfg or PolychromaticConfig()
    opts = {"device": phi.device, "dtype": phi.dtype}
    lam = torch.tensor(cfg.grid(), **opts)
    z = torch.tensor(cfg.defocus_um, **opts)
    if responses is None:
        responses = spectral_responses(lam, torch.tensor(cfg.centres_um, **opts),
                                       torch.tensor(cfg.widths_um, **opts))
    if responses.shape != (z.numel(), lam.numel()):
        raise ValueError(f"responses must be [channels={z.numel()}, wavelengths={lam.numel()}], "
                         f"got {list(responses.shape)}")
    # one propagation per (channel, wavelength): [..., C, L, H, W]
    stack = defocus_intensity(phi[..., None, None, :, :], cfg.pixel_um, lam[None, :], z[:, None],
                              cfg.medium_index)
    return torch.einsum("...clhw,cl->...chw", stack, responses.to(stack.dtype))


def add_noise(intensity: Tensor, level: float | Tensor, generator: torch.Generator | None = None
              ) -> Tensor:
    """The paper's camera noise: ``I + n`` with ``n ~ N(ℓ, ℓ²)`` per pixel (an offset ℓ and a
    standard deviation ℓ; ``level`` ℓ a float or a tensor broadcasting over the leading
    dimensions, e.g. ``[B, 1, 1, 1]``)."""
    level = torch.as_tensor(level, dtype=intensity.dtype, device=intensity.device)
    z = torch.randn(intensity.shape, generator=generator, dtype=intensity.dtype,
                    device=generator.device if generator is not None else intensity.device)
    return intensity + level * (1 + z.to(intensity.device))


def minmax(stack: Tensor, eps: float = 1e-12) -> Tensor:
    """Min-max normalise each example's stack ``[B, C, H, W]`` (all channels together) to [0, 1]."""
    flat = stack.flatten(1)
    lo = flat.min(1).values[:, None, None, None]
    hi = flat.max(1).values[:, None, None, None]
    return (stack - lo) / (hi - lo).clamp_min(eps)


def tie_phase(i_minus: Tensor, i_plus: Tensor, defocus_um: float, pixel_um: float,
              wavelength_um: float, medium_index: float = 1.0, regularization: float = 1e-4) -> Tensor:
    """Phase (rad, zero mean) ``[..., H, W]`` from the intensities at ``−Δz`` and ``+Δz``
    by the transport-of-intensity equation, solved with FFTs.

    TIE: ``−k ∂I/∂z = ∇·(I ∇φ)``, k = 2πn/λ. With the in-focus intensity taken as the
    mean of the pair (nearly uniform for a phase object), ``∇²φ = −(k/I₀) ∂I/∂z``, and
    ``∂I/∂z ≈ (I₊ − I₋)/(2Δz)``. The inverse Laplacian is Tikhonov-regularised:
    ``F[φ] = F[∇²φ] · (−q) / (q² + α)``, q = 4π²|f|² (µm⁻²), α = ``regularization``
    (µm⁻⁴): frequencies with q² ≲ α, where noise is amplified most, are damped (on a 64²
    grid of 0.21 µm pixels the lowest non-zero frequency has q² ≈ 0.05 µm⁻⁴).
    Boundaries are periodic (the FFT's); the mean phase is not determined and is set to 0.
    """
    i_minus, i_plus = i_minus.to(torch.float64), i_plus.to(torch.float64)
    k = 2 * math.pi * medium_index / wavelength_um
    i0 = 0.5 * (i_minus + i_plus).mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    didz = (i_plus - i_minus) / (2 * defocus_um)
    laplacian_phi = -(k / i0) * didz
    fy, fx = frequencies(tuple(i_plus.shape[-2:]), pixel_um, i_plus.device, torch.float64)
    q = 4 * math.pi**2 * (fx.square() + fy.square())
    inverse = -q / (q.square() + regularization)
    inverse[..., 0, 0] = 0.0
    return torch.fft.ifft2(torch.fft.fft2(laplacian_phi) * inverse).real


#: α = ADAPTIVE_TIE_GAIN · σ̂² (µm⁻⁴; σ̂ the relative noise std of one shot) with a floor:
#: fitted on synthetic cells (``benchmarks``' validation stream, never a test image), whose
#: best α per noise level follows σ² (Wiener's rule) within half a decade for ℓ = 0.02–0.2
ADAPTIVE_TIE_GAIN, ADAPTIVE_TIE_FLOOR = 0.1, 1e-7
#: the weight of a network's estimate against the intensities in :func:`tie_data_consistency`,
#: α = DATA_CONSISTENCY_GAIN · σ̂²: fitted on validation maps (natural and synthetic cells,
#: ``benchmarks/qpi_validation.py``), never a test image
DATA_CONSISTENCY_GAIN = 100.0


def two_shot_noise(i_minus: Tensor, i_plus: Tensor) -> float:
    """The relative noise std of one shot, from the pair's *sum*: for a phase object the
    defocus signal is odd in z and cancels there to first order, so the finest diagonal
    wavelet (Haar) coefficients of ``(I₋ + I₊) / mean`` are mostly noise; their median
    absolute value / 0.6745 (Donoho's estimator) / √2. Over-estimates when the phase has
    much fine texture (natural images), where TIE's choice of α matters least."""
    total = (i_minus + i_plus).to(torch.float64)
    total = total / total.mean().clamp_min(1e-12) * 2
    h, w = (total.shape[-2] // 2) * 2, (total.shape[-1] // 2) * 2
    t = total[..., :h, :w]
    diagonal = (t[..., 0::2, 0::2] - t[..., 0::2, 1::2] - t[..., 1::2, 0::2] + t[..., 1::2, 1::2]) / 2
    return float(diagonal.abs().median() / 0.6745 / math.sqrt(2))


def adaptive_tie_regularization(i_minus: Tensor, i_plus: Tensor, gain: float = ADAPTIVE_TIE_GAIN) -> float:
    """TIE's Tikhonov weight α (µm⁻⁴) for this pair's noise: ``max(gain · σ̂², floor)``."""
    return max(gain * two_shot_noise(i_minus, i_plus) ** 2, ADAPTIVE_TIE_FLOOR)


def tie_data_consistency(phi: Tensor, i_minus: Tensor, i_plus: Tensor, cfg: TwoShotConfig | None = None,
                         regularization: float = 1e-3) -> Tensor:
    """One Gauss-Newton step of ``min_φ ‖I − two_shot(φ)‖² + α ‖φ − φ₀‖²`` from an estimate
    ``φ₀ = phi`` ``[..., H, W]`` (rad), with TIE as the approximate inverse Jacobian:
    ``φ₀ + TIE_α(I − two_shot(φ₀))`` (the pair normalised by its mean intensity first). In
    TIE's linear regime this is the per-frequency blend ``(q² TIE₀ + α φ₀) / (q² + α)`` of
    the data's answer (TIE without regularisation) and ``φ₀``: frequencies the intensities
    determine (q² ≫ α) follow the data, the rest keep ``φ₀``; a ``φ₀`` that explains the
    intensities is returned unchanged. Zero mean, like TIE. float64."""
    cfg = cfg or TwoShotConfig()
    pair = torch.stack([i_minus, i_plus], dim=-3).to(torch.float64)
    pair = pair / pair.mean(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-12)
    phi = phi.to(torch.float64)
    residual = pair - two_shot(phi, cfg)
    step = tie_phase(1 + residual[..., 0, :, :], 1 + residual[..., 1, :, :], cfg.defocus_um, cfg.pixel_um,
                     cfg.wavelength_um, cfg.medium_index, regularization)
    return phi - phi.mean(dim=(-2, -1), keepdim=True) + step


def laplacian(img: Tensor, pixel_um: float) -> Tensor:
    """Spectral Laplacian of a periodic image ``[..., H, W]`` (units of ``img`` per µm²)."""
    fy, fx = frequencies(tuple(img.shape[-2:]), pixel_um, img.device, img.dtype)
    return torch.fft.ifft2(torch.fft.fft2(img) * (-4 * math.pi**2 * (fx.square() + fy.square()))).real
