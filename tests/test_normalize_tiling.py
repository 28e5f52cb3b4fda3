"""Percentile normalisation (exact inverse) and tiled application (no seams)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from microdiff.data.normalize import Normalizer
from microdiff.data.tiling import apply_tiled, tile_starts


def test_normalisation_maps_percentiles_and_inverts_exactly() -> None:
    rng = np.random.default_rng(0)
    img = rng.gamma(2.0, 300.0, size=(2, 64, 64)) + np.array([100.0, 5000.0])[:, None, None]
    norm = Normalizer.percentiles(img, 1, 99.8, channel_axis=0)
    z = norm.normalize(img, channel_axis=0)
    for c in range(2):
        assert np.percentile(z[c], 1) == pytest.approx(0, abs=1e-5)
        assert np.percentile(z[c], 99.8) == pytest.approx(1, abs=1e-5)
    back = norm.denormalize(z, channel_axis=0)
    np.testing.assert_allclose(back, img, rtol=1e-6)
    again = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.normalize(img, channel_axis=0), z)


def test_normaliser_errors() -> None:
    with pytest.raises(ValueError, match="lo < hi"):
        Normalizer.percentiles(np.zeros((4, 4)), 50, 10)
    with pytest.raises(ValueError, match="channel_axis"):
        Normalizer.percentiles(np.zeros((2, 4, 4)), channel_axis=0).normalize(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="positive mean"):
        Normalizer.mean_scale(np.zeros((2, 4, 4)))
    norm = Normalizer.percentiles(np.zeros((2, 4, 4)), channel_axis=0)
    with pytest.raises(ValueError, match="channels"):
        norm.normalize(np.zeros((3, 4, 4)), channel_axis=0)


def test_min_max_and_mean_scale_map_the_stack_as_named() -> None:
    """min_max: the stack's min → 0 and max → 1 with one span for all channels (ratios kept);
    mean_scale: the stack divided by its mean (no offset); both invert exactly."""
    stack = np.stack([np.linspace(10, 30, 16).reshape(4, 4), np.linspace(20, 50, 16).reshape(4, 4)])
    mm = Normalizer.min_max(stack)
    z = mm.normalize(stack, channel_axis=0)
    assert z.min() == pytest.approx(0) and z.max() == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(z, (stack - 10) / 40, rtol=1e-6)
    ms = Normalizer.mean_scale(stack)
    np.testing.assert_allclose(ms.normalize(stack, channel_axis=0), stack / stack.mean(), rtol=1e-6)
    for norm in (mm, ms):
        back = norm.denormalize(norm.normalize(stack, channel_axis=0), channel_axis=0)
        np.testing.assert_allclose(back, stack, rtol=1e-6)
    np.testing.assert_allclose(ms.denormalize_spread(np.ones((2, 1, 1)), channel_axis=0), stack.mean(),
                               rtol=1e-6)


def test_tile_starts_cover_the_image() -> None:
    assert tile_starts(100, 128, 16) == [0]
    starts = tile_starts(300, 64, 16)
    assert starts[0] == 0 and starts[-1] == 300 - 64
    assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.parametrize(("h", "w", "tile", "overlap"),
                         [(100, 77, 32, 16), (64, 64, 64, 8), (50, 130, 40, 12)])
def test_tiled_convolution_equals_untiled(h, w, tile, overlap) -> None:
    torch.manual_seed(0)
    weight = torch.randn(2, 1, 5, 5)  # receptive-field radius 2 ≤ margin = overlap // 4

    def conv(t):
        return F.conv2d(t, weight, padding=2)

    image = torch.randn(1, h, w)
    full = conv(image[None])[0]
    tiled = apply_tiled(conv, image, tile=tile, overlap=overlap, batch=3)
    assert tiled.shape == (2, h, w)
    assert (tiled - full).abs().max() < 1e-4


def test_constant_image_stays_constant_and_progress_is_reported() -> None:
    calls = []
    out = apply_tiled(lambda t: t * 1.0, torch.full((1, 90, 90), 3.5), tile=32, overlap=12,
                      progress=lambda done, total: calls.append((done, total)))
    assert torch.allclose(out, torch.full_like(out, 3.5), atol=1e-6)
    assert calls[-1][0] == calls[-1][1]


def test_tiling_argument_errors() -> None:
    with pytest.raises(ValueError, match="overlap"):
        apply_tiled(lambda t: t, torch.zeros(1, 8, 8), tile=8, overlap=8)
    with pytest.raises(ValueError, match="margin"):
        apply_tiled(lambda t: t, torch.zeros(1, 8, 8), tile=8, overlap=4, margin=2)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        apply_tiled(lambda t: t, torch.zeros(8, 8))


def _independent_draws(k: int, seed: int):
    """A "sampler" whose every tile draws ``k`` fresh N(level, 1) samples per pixel (the
    level: the image), returned as ``mean`` (the level) and ``samples`` ``[N, k, h, w]``."""
    gen = torch.Generator().manual_seed(seed)

    def fn(tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        noise = torch.randn(tiles.shape[0], k, *tiles.shape[-2:], generator=gen, dtype=torch.float64)
        return {"mean": tiles, "samples": tiles + noise}
    return fn


def test_draws_keep_their_spread_across_tile_overlaps() -> None:
    """Independent draws of two tiles, averaged, spread less (0.71× where both weigh
    equally); blended as ``draws`` they keep a unit spread in the overlaps as elsewhere, and
    their mean over the draws stays the linear blend of the tiles' means."""
    k, image = 256, torch.linspace(0, 1, 64 * 40, dtype=torch.float64).reshape(1, 64, 40)
    kept = apply_tiled(_independent_draws(k, 0), image, tile=24, overlap=12, draws={"samples": k})
    plain = apply_tiled(_independent_draws(k, 0), image, tile=24, overlap=12)
    spread, shrunk = kept["samples"].std(0), plain["samples"].std(0)
    blended = shrunk < 0.9  # the pixels where two or more tiles blend (plain spread shrinks)
    assert 0.2 < float(blended.double().mean()) < 0.8
    assert float(shrunk[blended].mean()) < 0.85  # what the plain blend gives there
    assert abs(float(spread[blended].mean()) - 1) < 0.02 and abs(float(spread[~blended].mean()) - 1) < 0.02
    assert float((spread / spread.mean()).min()) > 0.75  # no pixel's spread collapses
    torch.testing.assert_close(kept["samples"].mean(0), plain["samples"].mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(kept["mean"], image.float())  # other outputs blend as before


def test_draws_of_one_tile_are_left_as_drawn() -> None:
    """Where one tile covers the image (or a pixel), blending draws changes nothing."""
    image = torch.rand(1, 20, 20, dtype=torch.float64)
    kept = apply_tiled(_independent_draws(4, 1), image, tile=32, overlap=8, draws={"samples": 4})
    plain = apply_tiled(_independent_draws(4, 1), image, tile=32, overlap=8)
    torch.testing.assert_close(kept["samples"], plain["samples"])
