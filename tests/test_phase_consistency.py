"""The two-shot pair's weak-object transfer function and the Wiener data-consistency step
(``microdiff.data.phase_consistency``), against the forward model and closed forms computed
here with numpy."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from microdiff.data import phase as P
from microdiff.data.phase_consistency import frequency_rings, pair_ctf, wiener_data_consistency

CFG = P.TwoShotConfig()


def _weak_phase(size: int, amplitude: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    phi = gaussian_filter(rng.standard_normal((size, size)), 1.5, mode="wrap")
    return torch.as_tensor(amplitude * (phi - phi.mean()) / phi.std())


def test_the_ctf_is_the_forward_model_of_a_weak_phase_and_tie_in_the_small_angle_limit() -> None:
    phi = _weak_phase(64, 1e-3, seed=0)
    pair = P.two_shot(phi, CFG)
    ratio = torch.fft.fft2(pair[1] - pair[0]) / torch.fft.fft2(phi)
    ctf = pair_ctf((64, 64), CFG)
    seen = ctf.abs() > 0.1
    np.testing.assert_allclose(ratio.real[seen].numpy(), ctf[seen].numpy(), rtol=2e-3)  # sign and scale
    assert float(ratio.imag[seen].abs().max()) < 1e-3
    fy, fx = P.frequencies((64, 64), CFG.pixel_um, dtype=torch.float64)
    f2 = (fx.square() + fy.square())[0, 1]  # the lowest frequency: TIE's 4πλΔz|f|² (n = 1)
    assert abs(float(ctf[0, 1]) / (4 * math.pi * CFG.wavelength_um * CFG.defocus_um * float(f2)) - 1) < 1e-3
    evanescent = (fx.square() + fy.square()) >= (1 / CFG.wavelength_um) ** 2
    assert evanescent.any() and float(ctf[evanescent].abs().max()) == 0.0


def test_rings_group_frequencies_by_radius() -> None:
    ring, n = frequency_rings((8, 8))
    assert n == 7 and int(ring[0, 0]) == 0 and int(ring[0, 3]) == 3 and int(ring[3, 4]) == 5  # √(9+16)
    assert int(ring[-1, 0]) == 1 and int(ring[4, 4]) == 6  # negative frequencies; the corner (4√2)


def _expected_cosine_step(a: float, k: int, size: int, sigma: float, z: float) -> float:
    """Amplitude of the correction for I∓ = 1 ∓ a cos(2π k x / size) from φ₀ = 0, by hand."""
    idx = np.fft.fftfreq(size) * size
    radius = np.round(np.hypot(idx[:, None], idx[None, :]))
    f2 = (np.hypot(idx[:, None], idx[None, :]) / (size * CFG.pixel_um)) ** 2
    inv_lam = 1 / CFG.wavelength_um
    ctf = np.where(f2 < inv_lam**2, 4 * np.sin(2 * np.pi * CFG.defocus_um
                                                * (inv_lam - np.sqrt(np.clip(inv_lam**2 - f2, 0, None)))), 0)
    members = radius == k
    m, hw = members.sum(), size * size
    power = 2 * (a * hw) ** 2 / m  # the residual 2a cos has |FFT| = a·HW at ±k, nothing else
    noise = 2 * sigma**2 * hw
    s = max(power - noise * (1 + z / np.sqrt(m)), 0) / (ctf[members] ** 2).mean()
    t = ctf[0, k]
    return 2 * a * t * s / (t * t * s + noise)


def test_the_wiener_gain_matches_the_closed_form_on_one_cosine() -> None:
    size, k = 64, 5
    x = torch.arange(size, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * k * x / size)[None, :].expand(size, size)
    for a, sigma in [(1e-3, 1e-4), (1e-3, 3e-4), (1e-4, 1e-3)]:  # clear, marginal, below the noise
        out = wiener_data_consistency(torch.zeros(size, size), 1 - a * wave, 1 + a * wave, CFG,
                                      noise_std=sigma, threshold=4.0)
        expect = _expected_cosine_step(a, k, size, sigma, 4.0)
        np.testing.assert_allclose(out.numpy(), (expect * wave).numpy(), atol=1e-9 + 1e-6 * abs(expect))
    assert _expected_cosine_step(1e-4, k, size, 1e-3, 4.0) == 0.0  # the last case: no change at all
    assert _expected_cosine_step(1e-3, k, size, 1e-4, 4.0) > 0.9 * 2e-3 / float(pair_ctf((size, size))[0, k])


def test_an_estimate_that_explains_the_intensities_is_kept() -> None:
    phi = _weak_phase(64, 0.5, seed=1)
    pair = P.two_shot(phi, CFG)
    out = wiener_data_consistency(phi + 0.7, 5 * pair[0], 5 * pair[1], CFG)  # any offset, intensity scale
    np.testing.assert_allclose(out.numpy(), (phi - phi.mean()).numpy(), atol=1e-9)


def test_from_zero_the_step_recovers_what_the_pair_sees_of_a_weak_phase() -> None:
    phi = _weak_phase(64, 0.02, seed=2)
    pair = P.two_shot(phi, CFG)
    out = wiener_data_consistency(torch.zeros_like(phi), pair[0], pair[1], CFG, noise_std=1e-6)
    seen = pair_ctf((64, 64), CFG).abs() > 0.5
    power = lambda img: torch.fft.fft2(img)[seen].abs().square().sum()  # noqa: E731
    err = power(out - phi) / power(phi)
    assert float(err) < 0.01  # the frequencies the pair sees are recovered to 1 % of their power


def test_noise_alone_leaves_a_right_estimate_nearly_unchanged() -> None:
    phi = _weak_phase(96, 0.5, seed=3)
    noisy = P.add_noise(P.two_shot(phi, CFG), 0.05, generator=torch.Generator().manual_seed(3))
    out = wiener_data_consistency(phi, noisy[0], noisy[1], CFG)
    moved = float((out - (phi - phi.mean())).square().mean().sqrt())
    tie = P.tie_phase(noisy[0], noisy[1], CFG.defocus_um, CFG.pixel_um, CFG.wavelength_um, 1.0, 1e-3)
    tie_error = float((tie - (phi - phi.mean())).square().mean().sqrt())
    assert moved < 0.1 * tie_error  # rings at the noise level are not trusted
