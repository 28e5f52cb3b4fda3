"""Networks: shapes at any size, zero-initialised output, conditioning, paper size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microdiff.config import load_config
from microdiff.nets.unet import PixelNorm, UNet, UNetSpec


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (5, 40)])
def test_any_size_in_equals_size_out(hw) -> None:
    net = UNet(2, 1, UNetSpec(8, [1, 2, 2], 1, attention_levels=[2], mid_attention=True),
               cond_channels=3, zero_init_out=False)
    out = net(torch.randn(2, 2, *hw), torch.randn(2, 3, *hw))
    assert out.shape == (2, 1, *hw) and torch.isfinite(out).all()


def test_attention_at_a_width_not_divisible_by_32() -> None:
    net = UNet(1, 1, UNetSpec(12, [1, 4], 1, attention_levels=[1], mid_attention=True))
    assert net(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)


def test_output_layer_is_zero_initialised() -> None:
    net = UNet(2, 1, UNetSpec(8, [1, 2], 1), cond_channels=3)
    assert torch.all(net(torch.randn(1, 2, 8, 8), torch.rand(1, 3, 8, 8)) == 0)


def test_conditioning_map_changes_the_output_per_pixel() -> None:
    torch.manual_seed(0)
    net = UNet(1, 1, UNetSpec(8, [1, 2], 1), cond_channels=1, zero_init_out=False)
    with torch.no_grad():  # residual branches start at zero: give them weights
        for p in net.parameters():
            if torch.all(p == 0):
                p.normal_(0, 0.1)
    x = torch.randn(1, 1, 16, 64)
    c1 = torch.zeros(1, 1, 16, 64)
    c2 = c1.clone()
    c2[..., :, 40:] = 1.0  # a different noise level on the right only
    diff = (net(x, c1) - net(x, c2)).abs()
    # GroupNorm statistics spread a little of the change everywhere; most stays local
    assert diff[..., :, 48:].mean() > 2 * diff[..., :, :8].mean()


def test_missing_conditioning_map_is_an_error() -> None:
    net = UNet(1, 1, UNetSpec(8, [1], 1), cond_channels=1)
    with pytest.raises(ValueError, match="conditioning"):
        net(torch.randn(1, 1, 8, 8))


def test_invalid_specs_are_rejected() -> None:
    for kwargs in ({"base_channels": 0}, {"channel_mults": []}, {"num_res_blocks": 0},
                   {"attention_levels": [5]}, {"dropout": 1.0}, {"norm": "batch"}):
        with pytest.raises(ValueError):
            UNetSpec(**kwargs)


def test_pixel_norm_is_a_layer_norm_over_each_pixels_channels() -> None:
    """Against a float64 NumPy computation per pixel, with a non-trivial scale and shift:
    (x − mean over channels) / √(var over channels + eps) · weight + bias."""
    torch.manual_seed(0)
    norm = PixelNorm(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = 3 * torch.randn(2, 6, 5, 7) + 1
    a = x.double().numpy()
    mean, var = a.mean(axis=1, keepdims=True), a.var(axis=1, keepdims=True)
    w, b = norm.weight.detach().double().numpy(), norm.bias.detach().double().numpy()
    ref = (a - mean) / np.sqrt(var + norm.eps) * w[:, None, None] + b[:, None, None]
    assert np.allclose(norm(x).detach().double().numpy(), ref, atol=1e-5)


def _randomised(net: UNet) -> UNet:
    with torch.no_grad():  # residual branches start at zero: give them weights
        for p in net.parameters():
            if torch.all(p == 0):
                p.normal_(0, 0.1)
    return net


@pytest.mark.parametrize("norm, local", [("pixel", True), ("group", False)])
def test_pixel_norm_makes_the_output_independent_of_the_rest_of_the_image(norm, local) -> None:
    """With ``norm=pixel`` a pixel's output depends on its receptive field only, so a crop
    of the whole image's output equals the output on the crop farther than the receptive
    field (~56 px here) from the crop's cut edges; GroupNorm's image-wide statistics change
    it (why a network trained on patches behaves differently on whole images)."""
    torch.manual_seed(0)
    net = _randomised(UNet(1, 1, UNetSpec(8, [1, 2, 2], 1, norm=norm), zero_init_out=False)).eval()
    x = torch.randn(1, 1, 192, 192)
    x[..., :, 128:] *= 4  # the rest of the image differs in contrast
    with torch.no_grad():
        whole = net(x)[..., :64, :64]
        crop = net(x[..., :128, :128])[..., :64, :64]
    close = torch.allclose(whole, crop, atol=1e-5)
    assert close == local


def test_paper_preset_has_the_published_size() -> None:
    """The authors' SR3 denoiser (base 64, mults 1,2,4,8,8) has about 120 M parameters."""
    cfg = load_config("paper")
    assert cfg.model.denoiser.base_channels == 64
    assert cfg.model.denoiser.channel_mults == [1, 2, 4, 8, 8]
    assert cfg.model.schedule.net.base_channels == 32
    assert cfg.model.residual and cfg.model.timesteps == 200 and cfg.train.lr == 1e-4
    with torch.device("meta"):
        net = UNet(2, 1, cfg.model.denoiser, cond_channels=3)
    n = sum(p.numel() for p in net.parameters())
    assert 100e6 < n < 140e6, n
