"""Apply an image-to-image function to images of any size with overlapping tiles.

Tiles overlap by ``overlap`` pixels. Each tile's weight is 1 inside, 0 in a ``margin``
next to an edge it shares with a neighbouring tile (where a convolutional network sees
padding instead of the true neighbourhood), and a raised cosine in between; at the image
border it stays 1. Outputs are the weighted average, so a translation-equivariant
function whose receptive-field radius is at most ``margin`` gives the untiled result.

Random draws (posterior samples) are the exception: two tiles draw independently, and a
weighted average of independent draws spreads less than either (by √(Σw²)/Σw, 0.71 where
two tiles weigh equally). For the outputs named in ``draws`` the blend keeps the spread:
with S the weighted average of the draws, M that of each tile's mean of its draws, and
ρ = √(Σw²)/Σw, a draw is M + (S − M)/ρ, whose spread over the draws at each pixel is the
tiles' (and equals S where one tile covers the pixel).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with ≥ ``overlap``."""
    if tile >= length:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _edge_ramp(size: int, overlap: int, margin: int, left: bool, right: bool) -> Tensor:
    """1-D window: 0 for ``margin`` px at inner edges, raised cosine up to 1 over the rest
    of the overlap, 1 elsewhere and at image borders."""
    w = torch.ones(size, dtype=torch.float64)
    rise = max(overlap - 2 * margin, 1)
    ramp = torch.tensor([0.5 - 0.5 * math.cos(math.pi * (i + 1) / (rise + 1)) for i in range(rise)],
                        dtype=torch.float64)
    prof = torch.cat([torch.zeros(margin, dtype=torch.float64), ramp])[:size]
    if left:
        w[: prof.numel()] = torch.minimum(w[: prof.numel()], prof)
    if right:
        w[size - prof.numel():] = torch.minimum(w[size - prof.numel():], prof.flip(0))
    return w


def apply_tiled(
    fn: Callable[[Tensor], Tensor | dict[str, Tensor]],
    image: Tensor,
    tile: int = 256,
    overlap: int = 32,
    margin: int | None = None,
    batch: int = 4,
    progress: Callable[[int, int], None] | None = None,
    draws: dict[str, int] | None = None,
) -> Tensor | dict[str, Tensor]:
    """``fn`` over ``image`` ``[C, H, W]`` in tiles; ``fn`` maps ``[N, C, h, w]`` to
    ``[N, C', h, w]`` (or to a dict of such tensors, each blended on its own). Returns
    ``[C', H, W]`` float32 (or the dict of them). ``margin`` defaults to ``overlap // 4``;
    it must leave a positive blend: ``overlap ≥ 2·margin + 1``. ``progress(done, total)``
    is called after each batch of tiles. ``draws``: ``{name: K}`` for dict outputs whose
    ``C' = K·c`` channels are K independent draws (K blocks of c channels), blended so that
    they keep their spread (module docstring).
    """
    if image.ndim != 3:
        raise ValueError(f"image must be [C, H, W], got shape {tuple(image.shape)}")
    margin = overlap // 4 if margin is None else margin
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if overlap and overlap < 2 * margin + 1:
        raise ValueError(f"overlap {overlap} too small for margin {margin}: need >= 2*margin+1")
    _, h, w = image.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, x) for y in ys for x in xs]
    draws = draws or {}
    sums: _Sums | None = None
    single = False
    for i in range(0, len(boxes), batch):
        chunk = boxes[i: i + batch]
        result = fn(torch.stack([image[:, y: y + th, x: x + tw] for y, x in chunk]))
        single = not isinstance(result, dict)
        named = {"": result} if single else result
        centres = {k: named[k].unflatten(1, (n, -1)).mean(1) for k, n in draws.items()}
        sums = sums or _Sums(named, centres, h, w)
        for j, (y, x) in enumerate(chunk):
            wy = _edge_ramp(th, overlap, margin, y > 0, y + th < h)
            wx = _edge_ramp(tw, overlap, margin, x > 0, x + tw < w)
            sums.add(named, centres, j, (slice(None), slice(y, y + th), slice(x, x + tw)),
                     wy[:, None] * wx[None, :])
        if progress is not None:
            progress(min(i + batch, len(boxes)), len(boxes))
    blended = {k: sums.blended(k, draws.get(k)) for k in sums.outputs}
    return blended[""] if single else blended


class _Sums:
    """:func:`apply_tiled`'s weighted sums on the image grid (float64): Σw·r for each output,
    Σw·(a tile's mean of its draws) for each output of draws, Σw and Σw²."""

    def __init__(self, named: dict[str, Tensor], centres: dict[str, Tensor], h: int, w: int) -> None:
        def zeros(c: int, like: Tensor) -> Tensor:
            return torch.zeros(c, h, w, dtype=torch.float64, device=like.device)

        self.outputs = {k: zeros(r.shape[1], r) for k, r in named.items()}
        self.centres = {k: zeros(r.shape[1], r) for k, r in centres.items()}
        first = next(iter(named.values()))
        self.weight, self.squares = zeros(1, first), zeros(1, first)

    def add(self, named: dict[str, Tensor], centres: dict[str, Tensor], j: int, area: tuple,
            weight: Tensor) -> None:
        """Tile ``j`` of a batch (``[N, C', h, w]`` outputs), at ``area``, with ``weight`` ``[h, w]``."""
        weight = weight.to(self.weight.device)
        for total, parts in ((self.outputs, named), (self.centres, centres)):
            for k, r in parts.items():
                total[k][area] += r[j].detach().double() * weight
        self.weight[area] += weight
        self.squares[area] += weight ** 2

    def blended(self, key: str, n: int | None) -> Tensor:
        """Output ``key`` float32: Σw·r / Σw, or for ``n`` draws M + (S − M)/ρ, which keeps
        their spread (module docstring)."""
        s = self.outputs[key] / self.weight
        if n is not None:
            centre = (self.centres[key] / self.weight).repeat(n, 1, 1)
            s = centre + (s - centre) * (self.weight / self.squares.sqrt())
        return s.float()
