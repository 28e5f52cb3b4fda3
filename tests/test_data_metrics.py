"""The demo's filament generator and the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microdiff import metrics
from microdiff.data.synthetic import make_filament_pairs


def test_filament_pairs_are_deterministic_and_shaped() -> None:
    a = make_filament_pairs(3, size=32, scale=2, seed=5)
    b = make_filament_pairs(3, size=32, scale=2, seed=5)
    c = make_filament_pairs(3, size=32, scale=2, seed=6)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.y, c.y)
    assert a.x.shape == a.y.shape == (3, 1, 32, 32) and a.low.shape == (3, 1, 16, 16)
    assert a.x.dtype == torch.float32


def test_input_is_a_blurred_noisy_version_of_the_target() -> None:
    pairs = make_filament_pairs(8, size=64, seed=0, photons=1e6)
    for x, y in zip(pairs.x[:, 0].numpy(), pairs.y[:, 0].numpy(), strict=True):
        r = np.corrcoef(x.ravel(), y.ravel())[0, 1]
        assert 0.5 < r < 0.98  # registered, but clearly not the same image
        # the target is sharper: more energy at high spatial frequencies
        fx, fy = np.abs(np.fft.fft2(x - x.mean())), np.abs(np.fft.fft2(y - y.mean()))
        hi = np.zeros_like(fx, bool)
        hi[16:48, :] = hi[:, 16:48] = True  # |frequency| above a quarter of the sampling rate
        assert fy[hi].sum() / fy.sum() > fx[hi].sum() / fx.sum()


def test_size_must_be_divisible_by_scale() -> None:
    with pytest.raises(ValueError, match="multiple"):
        make_filament_pairs(1, size=33, scale=2)


def test_affine_match_recovers_scale_and_offset() -> None:
    rng = np.random.default_rng(0)
    target = rng.random((16, 16))
    np.testing.assert_allclose(metrics.affine_match(3 * target - 2, target), target, atol=1e-12)
    assert metrics.psnr(3 * target - 2, target) > 100
    assert metrics.psnr(3 * target - 2, target, match=False) < 10


def test_psnr_and_ssim_values() -> None:
    rng = np.random.default_rng(0)
    target = rng.random((32, 32))
    noisy = target + rng.normal(0, 0.3, target.shape)
    mse = np.mean((noisy - target) ** 2)
    expected = 10 * np.log10(metrics.data_range(target) ** 2 / mse)
    assert metrics.psnr(noisy, target, match=False) == pytest.approx(expected)
    assert metrics.ssim(target, target) == pytest.approx(1.0)
    assert metrics.ssim(noisy, target) < 0.9
