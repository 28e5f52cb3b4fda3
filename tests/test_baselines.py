"""Classical baselines: the PSF is a proper PSF, and deconvolution sharpens simulated data."""

from __future__ import annotations

import numpy as np
import pytest

from microdiff import metrics
from microdiff.baselines import apply_baseline, bicubic, richardson_lucy_upsample, widefield_psf
from microdiff.data.synthetic import simulate_pair


def test_psf_is_normalised_centred_and_symmetric() -> None:
    psf = widefield_psf(0.0626)
    assert psf.shape[0] == psf.shape[1] and psf.shape[0] % 2 == 1
    assert psf.sum() == pytest.approx(1.0) and (psf >= 0).all()
    c = psf.shape[0] // 2
    assert np.unravel_index(psf.argmax(), psf.shape) == (c, c)
    np.testing.assert_allclose(psf, psf.T, atol=1e-12)
    assert widefield_psf(0.0313).shape[0] > psf.shape[0]  # finer pixels: more of them


def test_richardson_lucy_beats_bicubic_on_bright_simulated_pairs() -> None:
    gains = []
    for i, kind in enumerate(("mt", "ccp", "er")):
        pair = simulate_pair(kind, 96, np.random.default_rng([4, i]), level=9)
        b = bicubic(pair.low, 2)
        r = richardson_lucy_upsample(pair.low, 2)
        assert r.shape == b.shape == pair.target.shape
        gains.append(metrics.ssim(r, pair.target) - metrics.ssim(b, pair.target))
    assert np.mean(gains) > 0.05, gains


def test_unknown_baseline_and_flat_input() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        apply_baseline("wiener", np.zeros((8, 8)), 2)
    assert np.all(apply_baseline("richardson-lucy", np.full((8, 8), 3.0), 2) == 0)
