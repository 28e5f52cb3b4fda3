"""Fresnel propagation, the QPI forward models and the TIE solver (issue 6)."""

from __future__ import annotations

import math

import pytest
import torch

from microdiff.data import phase as P


def _smooth_phase(n: int = 64, amplitude: float = 1.0, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A sum of periodic Gaussian bumps (smooth, band-limited), zero mean, in radians."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(n, dtype=dtype), torch.arange(n, dtype=dtype), indexing="ij")
    phi = torch.zeros(n, n, dtype=dtype)
    for _ in range(5):
        cy, cx = (torch.rand(2, generator=g, dtype=dtype) * n).tolist()
        s = 5 + 4 * float(torch.rand(1, generator=g))
        dy = torch.remainder(yy - cy + n / 2, n) - n / 2  # periodic distance
        dx = torch.remainder(xx - cx + n / 2, n) - n / 2
        sign = 2 * float(torch.rand(1, generator=g)) - 1
        phi += torch.exp(-(dy.square() + dx.square()) / (2 * s * s)) * sign
    phi = phi - phi.mean()
    return amplitude * phi / phi.abs().max()


def _rough_phase(n: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 3.5 * torch.rand(n, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("evanescent", ["drop", "keep"])
def test_propagation_conserves_energy(evanescent) -> None:
    phi = _smooth_phase(amplitude=3.0) if evanescent == "drop" else _rough_phase()
    u0 = P.phase_object(phi)
    u = P.propagate(u0, 0.21, 0.521, 2.0, evanescent=evanescent)
    e0, e1 = u0.abs().square().sum(), u.abs().square().sum()
    assert float(abs(e1 - e0) / e0) < 1e-9


def test_dropping_evanescent_waves_removes_their_energy_only() -> None:
    u0 = P.phase_object(_rough_phase())  # white phase: some energy beyond n/λ
    u = P.propagate(u0, 0.21, 0.521, 1.0)
    h = P.transfer_function((64, 64), 0.21, 0.521, 1.0, dtype=torch.float64)
    propagating = (h.abs() > 0).to(torch.float64)
    expected = (torch.fft.fft2(u0).abs().square() * propagating).sum() / u0.numel()
    assert float(u.abs().square().sum()) == pytest.approx(float(expected), rel=1e-9)
    assert float(u.abs().square().sum()) < float(u0.abs().square().sum())


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_propagation_is_invertible(dtype, tol) -> None:
    u0 = P.phase_object(_rough_phase().to(dtype))
    back = P.propagate(P.propagate(u0, 0.21, 0.521, 1.5, evanescent="keep"), 0.21, 0.521, -1.5,
                       evanescent="keep")
    assert float((back - u0).abs().max()) < tol
    # the default drops evanescent waves: a smooth object keeps almost nothing beyond n/λ
    smooth = P.phase_object(_smooth_phase(amplitude=3.5).to(dtype))
    back = P.propagate(P.propagate(smooth, 0.21, 0.521, 1.5), 0.21, 0.521, -1.5)
    assert float((back - smooth).abs().max()) < 1e-5


@pytest.mark.parametrize("z", [-3.0, 0.5, 10.0])
def test_zero_phase_gives_uniform_intensity(z) -> None:
    intensity = P.defocus_intensity(torch.zeros(32, 48), 0.21, 0.55, z)
    torch.testing.assert_close(intensity, torch.ones(32, 48), atol=1e-6, rtol=0)


def test_weak_phase_intensity_matches_tie_to_first_order() -> None:
    # TIE with I0 = 1: ∂I/∂z = −∇²φ / k, so I(z) − 1 ≈ −z ∇²φ / k for a weak phase.
    eps, z, lam, px = 1e-3, 0.5, 0.521, 0.21
    phi = _smooth_phase(amplitude=eps)
    k = 2 * math.pi / lam
    change = P.defocus_intensity(phi, px, lam, z) - 1
    predicted = -z * P.laplacian(phi, px) / k
    rel = float((change - predicted).norm() / predicted.norm())
    assert rel < 0.02


def test_tie_recovers_a_smooth_phase_from_noise_free_data() -> None:
    phi = _smooth_phase(amplitude=1.0)
    cfg = P.TwoShotConfig(defocus_um=0.5)
    pair = P.two_shot(phi, cfg)
    est = P.tie_phase(pair[0], pair[1], cfg.defocus_um, cfg.pixel_um, cfg.wavelength_um,
                      regularization=1e-6)
    rmse = float((est - (phi - phi.mean())).square().mean().sqrt())
    assert rmse < 0.05
    flat = P.tie_phase(torch.ones(64, 64), torch.ones(64, 64), 1.0, 0.21, 0.521)
    assert float(flat.abs().max()) == 0.0  # no intensity change: no phase


def test_tie_data_consistency_follows_the_data_where_it_determines_the_phase() -> None:
    """One Gauss-Newton step from a wrong estimate: a weight α below the frequencies' q²
    recovers the truth (sign and scale of the step), an α above them keeps the estimate, and
    an estimate that explains the intensities is kept whatever α."""
    phi = _smooth_phase(amplitude=0.5)
    phi = phi - phi.mean()
    cfg = P.TwoShotConfig(defocus_um=0.5)
    pair = P.two_shot(phi, cfg)
    rmse = lambda est: float((est - phi).square().mean().sqrt())  # noqa: E731
    start = 0.5 * phi  # half the phase: the step must add the other half, not subtract it
    assert rmse(P.tie_data_consistency(start, pair[0], pair[1], cfg, 1e-6)) < 0.1 * rmse(start)
    kept = P.tie_data_consistency(start, pair[0], pair[1], cfg, 1e6)
    assert float((kept - start).abs().max()) < 1e-3 * float(start.abs().max())
    exact = P.tie_data_consistency(phi + 2.0, 3 * pair[0], 3 * pair[1], cfg, 1e-6)  # any offset, scale
    assert float((exact - phi).abs().max()) < 1e-9
    # from zero, the step is TIE of the intensities
    tie = P.tie_phase(pair[0], pair[1], cfg.defocus_um, cfg.pixel_um, cfg.wavelength_um, regularization=1e-4)
    from_zero = P.tie_data_consistency(torch.zeros_like(phi), pair[0], pair[1], cfg, 1e-4)
    assert torch.allclose(from_zero, tie, atol=1e-6)


def test_two_shot_shapes_and_symmetry() -> None:
    phi = _smooth_phase(amplitude=1.0).expand(3, 64, 64)
    pair = P.two_shot(phi)
    assert pair.shape == (3, 2, 64, 64)
    # a real phase defocused by ±z: the intensity changes are opposite to first order
    d_minus, d_plus = pair[0, 0] - 1, pair[0, 1] - 1
    assert float(torch.corrcoef(torch.stack([d_minus.flatten(), d_plus.flatten()]))[0, 1]) < -0.9


def test_polychromatic_at_one_wavelength_equals_monochromatic() -> None:
    phi = _smooth_phase(amplitude=3.5)
    cfg = P.PolychromaticConfig(defocus_um=(1.2, 1.2, 1.2), wavelengths_um=(0.55,))
    rgb = P.polychromatic(phi, cfg)
    mono = P.defocus_intensity(phi, cfg.pixel_um, 0.55, 1.2)
    assert rgb.shape == (3, 64, 64)
    for c in range(3):
        torch.testing.assert_close(rgb[c], mono, atol=1e-12, rtol=0)
    # also as a limit of narrow responses on the full grid, when 0.55 is on the grid
    grid = P.PolychromaticConfig(centres_um=(0.55, 0.55, 0.55), widths_um=(1e-4,) * 3,
                                 defocus_um=(1.2,) * 3, spectrum_um=(0.4, 0.7), n_wavelengths=31)
    torch.testing.assert_close(P.polychromatic(phi, grid)[1], mono, atol=1e-9, rtol=0)


def test_polychromatic_channels_differ_by_defocus_and_colour() -> None:
    phi = _smooth_phase(amplitude=3.5)
    rgb = P.polychromatic(phi, P.PolychromaticConfig(n_wavelengths=12))
    assert rgb.shape == (3, 64, 64)
    assert float((rgb[0] - rgb[2]).abs().max()) > 1e-3
    # responses sum to one, so each channel keeps the mean intensity of a phase object
    torch.testing.assert_close(rgb.mean(dim=(-2, -1)), torch.ones(3, dtype=rgb.dtype), atol=1e-6, rtol=0)
    r = P.spectral_responses(torch.linspace(0.4, 0.7, 12, dtype=torch.float64),
                             torch.tensor([0.63, 0.55, 0.45], dtype=torch.float64),
                             torch.tensor([0.05, 0.05, 1e-6], dtype=torch.float64))
    torch.testing.assert_close(r.sum(-1), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="responses"):
        P.polychromatic(phi, P.PolychromaticConfig(n_wavelengths=12), responses=torch.ones(2, 12))


def test_noise_has_the_paper_statistics_and_minmax_normalises() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.ones(4, 2, 64, 64)
    noisy = P.add_noise(clean, 0.1, generator=g)
    d = noisy - clean
    assert float(d.mean()) == pytest.approx(0.1, abs=3e-3)
    assert float(d.std()) == pytest.approx(0.1, rel=3e-2)
    again = P.add_noise(clean, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    m = P.minmax(noisy)
    assert torch.allclose(m.flatten(1).min(1).values, torch.zeros(4))
    assert torch.allclose(m.flatten(1).max(1).values, torch.ones(4))
