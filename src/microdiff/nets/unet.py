"""A configurable U-Net, optionally modulated per pixel by a conditioning map.

Used three ways (all with the same class, none of them aware of diffusion):
- the denoiser (SR3 style): input ``[y_t, x(, μ)]``, conditioning map = noise-level
  features of the per-pixel γ, which modulate every residual block (FiLM per pixel);
- the schedule's small U-Net (no conditioning map) whose output becomes λ(x);
- a deterministic regression / ZMD mean network (no conditioning map).

Any H, W work: the input is reflect-padded to a multiple of 2^(levels−1) and cropped back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class UNetSpec:
    """Architecture of a :class:`UNet` (validated as part of the model config).

    base_channels: width of the first level; level ``i`` has ``base_channels * channel_mults[i]``.
    num_res_blocks: residual blocks per level on the way down (one more on the way up).
    attention_levels: level indices (0 = full resolution) with self-attention after each block.
    mid_attention: self-attention in the bottleneck.
    dropout: dropout probability inside residual blocks.
    norm: ``group`` (GroupNorm: statistics over each image's pixels, so an output depends on
        the size and content of the whole input) or ``pixel`` (each pixel's channels
        normalised on their own: without attention, the output at a pixel depends only on
        its receptive field, whatever the size of the image around it).
    """

    __pydantic_config__ = {"extra": "forbid"}

    base_channels: int = 32
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 1
    attention_levels: list[int] = field(default_factory=list)
    mid_attention: bool = False
    dropout: float = 0.0
    norm: str = "group"

    def __post_init__(self) -> None:
        if self.base_channels < 1:
            raise ValueError("base_channels must be at least 1")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError("channel_mults must be a non-empty list of positive integers")
        if self.num_res_blocks < 1:
            raise ValueError("num_res_blocks must be at least 1")
        bad = [i for i in self.attention_levels if not 0 <= i < len(self.channel_mults)]
        if bad:
            raise ValueError(f"attention_levels {bad} outside 0..{len(self.channel_mults) - 1}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")


NORMS = ("group", "pixel")


class PixelNorm(nn.Module):
    """Each pixel's channels normalised to zero mean and unit variance, then a per-channel
    scale and shift: ``[B, C, H, W]`` → ``[B, C, H, W]`` (a channel LayerNorm; no statistic
    crosses pixels)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # torch's fused layer_norm over the last axis, on a channels-last view
        out = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return out.permute(0, 3, 1, 2)


def _norm(channels: int, kind: str = "group") -> nn.Module:
    return PixelNorm(channels) if kind == "pixel" else nn.GroupNorm(math.gcd(32, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Norm–SiLU–conv twice; optional per-pixel FiLM (scale, shift) from ``emb``."""

    def __init__(self, cin: int, cout: int, emb_channels: int, dropout: float, norm: str = "group") -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, norm), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, norm), _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.film = nn.Conv2d(emb_channels, 2 * cout, 1) if emb_channels else None
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb).chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over pixels, heads of 32 channels (one head if 32 does
    not divide the width)."""

    def __init__(self, channels: int, norm: str = "group") -> None:
        super().__init__()
        self.heads = channels // 32 if channels % 32 == 0 else 1
        self.norm = _norm(channels, norm)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """U-Net ``[B, in_channels, H, W]`` (+ cond ``[B, cond_channels, H, W]``) → ``[B, out_channels, H, W]``.

    ``cond_channels > 0`` adds a small convolutional embedding of the conditioning map that
    is average-pooled to every level and turned into a per-pixel scale and shift in each
    residual block. ``zero_init_out`` zeroes the output layer (the network starts at 0).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spec: UNetSpec,
        cond_channels: int = 0,
        zero_init_out: bool = True,
    ) -> None:
        super().__init__()
        self.spec = spec
        base, mults = spec.base_channels, spec.channel_mults
        emb = base if cond_channels else 0
        self.cond_embed = (
            nn.Sequential(
                nn.Conv2d(cond_channels, emb, 3, padding=1), nn.SiLU(), nn.Conv2d(emb, emb, 3, padding=1)
            )
            if cond_channels
            else None
        )
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [base], base
        for level, mult in enumerate(mults):
            for _ in range(spec.num_res_blocks):
                blocks = [ResBlock(ch, base * mult, emb, spec.dropout, spec.norm)]
                ch = base * mult
                if level in spec.attention_levels:
                    blocks.append(Attention(ch, spec.norm))
                self.down.append(_Stage(blocks, level))
                skips.append(ch)
            if level != len(mults) - 1:
                self.down.append(_Stage([nn.Conv2d(ch, ch, 3, stride=2, padding=1)], level, resample=True))
                skips.append(ch)
        mid = [ResBlock(ch, ch, emb, spec.dropout, spec.norm)]
        if spec.mid_attention:
            mid.append(Attention(ch, spec.norm))
        mid.append(ResBlock(ch, ch, emb, spec.dropout, spec.norm))
        self.mid = _Stage(mid, len(mults) - 1)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(spec.num_res_blocks + 1):
                blocks = [ResBlock(ch + skips.pop(), base * mult, emb, spec.dropout, spec.norm)]
                ch = base * mult
                if level in spec.attention_levels:
                    blocks.append(Attention(ch, spec.norm))
                self.up.append(_Stage(blocks, level))
            if level != 0:
                self.up.append(_Stage([_Upsample(ch)], level - 1, resample=True))
        self.norm_out = _norm(ch, spec.norm)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        if zero_init_out:
            _zero(self.conv_out)
        self.multiple = 2 ** (len(mults) - 1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h_in, w_in = x.shape[-2:]
        pad_h, pad_w = (-h_in) % self.multiple, (-w_in) % self.multiple
        if pad_h or pad_w:
            mode = "reflect" if min(h_in, w_in) > max(pad_h, pad_w) else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            if cond is not None:
                cond = F.pad(cond, (0, pad_w, 0, pad_h), mode=mode)
        embs: list[Tensor | None] = [None] * (len(self.spec.channel_mults))
        if self.cond_embed is not None:
            if cond is None:
                raise ValueError("this UNet needs a conditioning map")
            e = self.cond_embed(cond.to(x.dtype))
            for level in range(len(embs)):
                embs[level] = e if level == 0 else F.avg_pool2d(e, 2**level)
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            h = stage(h, embs)
            skips.append(h)
        h = self.mid(h, embs)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1) if not stage.resample else h, embs)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :h_in, :w_in]


class _Stage(nn.Module):
    """A few layers applied in order at one resolution level."""

    def __init__(self, layers: list[nn.Module], level: int, resample: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.level = level
        self.resample = resample

    def forward(self, h: Tensor, embs: list[Tensor | None]) -> Tensor:
        for layer in self.layers:
            h = layer(h, embs[self.level]) if isinstance(layer, (ResBlock, Attention)) else layer(h)
        return h


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
