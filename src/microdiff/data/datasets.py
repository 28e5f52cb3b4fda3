"""Paired training data: folders, BioSR cells, the simulator on the fly; aligned patches.

A paired folder is ``DATA/input/NAME.ext`` + ``DATA/target/NAME.ext`` (same NAME; the input
may be on a grid coarser by an integer scale factor). BioSR cells are folders holding
``RawSIMData_level_XX.mrc`` and ``SIM_gt.mrc``. Each image is percentile-normalised on its
own (CSBDeep convention); the condition ``x`` is the input bicubic-upsampled to the target
grid. Splits are made by file (or cell), never by patch, so no validation patch shares an
image with a training patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ShapeError, UserError, check_finite
from .axes import image_chw
from .io import IMAGE_SUFFIXES, image_stem, read_biosr_cell, read_image, shared_stem
from .synthetic import SimulatorConfig, simulate_pair, upsample
from .tasks import Task

STREAM_TAG = 0x5EED  # see simulated()


@dataclass
class Pair:
    """One normalised pair: ``low`` ``[C, h, w]``, ``x`` (upsampled) and ``y`` ``[C, H, W]``,
    float32 tensors; ``scale`` = H / h; ``name`` identifies the file or cell."""

    name: str
    low: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    scale: int


def make_pair(name: str, low: np.ndarray, target: np.ndarray, task: Task | None = None) -> Pair:
    """Normalise ``low`` ``[C, h, w]`` and ``target`` ``[C, H, W]`` and build the condition
    (see :mod:`microdiff.data.tasks`; default: super-resolution)."""
    if low.ndim != 3 or target.ndim != 3:
        raise ShapeError(f"{name}: expected [C, H, W] arrays, got {low.shape} and {target.shape}")
    task = task or Task()
    task.check_channels(low.shape[0])
    check_finite(low, f"{name} (input)")
    check_finite(target, f"{name} (target)")
    h, w = low.shape[-2:]
    H, W = target.shape[-2:]
    if task.is_phase and (H, W) != (h, w):
        raise ShapeError(f"{name}: intensities {h}x{w} and phase {H}x{W} must have the same size")
    if H % h or W % w or H // h != W // w:
        raise ShapeError(f"{name}: target {H}x{W} is not an integer multiple of input {h}x{w}")
    scale = H // h
    low_n = task.fit_input(low).normalize(low, channel_axis=0)
    y_n = task.normalize_target(target)
    low_t = torch.from_numpy(low_n)
    x = upsample(low_t[None], scale)[0] if scale > 1 else low_t.clone()
    return Pair(name, low_t, task.condition(x), torch.from_numpy(y_n), scale)


def paired_files(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """``(name, input file, target file)`` for every pair of a paired folder, by stem."""
    folder = Path(folder)
    inp, tgt = folder / "input", folder / "target"
    if not inp.is_dir() or not tgt.is_dir():
        raise UserError(f"{folder}: a paired data folder needs input/ and target/ subfolders")

    def stems(d: Path) -> dict[str, Path]:
        files = [p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if shared := shared_stem(files):
            raise UserError(f"{shared[0]} and {shared[1]}: two images named {image_stem(shared[1])!r}; "
                            "keep one")
        return {image_stem(p): p for p in files}

    a, b = stems(inp), stems(tgt)
    if not a:
        raise UserError(f"{inp}: no images ({', '.join(IMAGE_SUFFIXES)})")
    missing = sorted(set(a) ^ set(b))
    if missing:
        raise UserError(f"{folder}: {len(missing)} image(s) without a partner, e.g. {missing[0]!r}")
    return [(s, a[s], b[s]) for s in sorted(a)]


def paired_folder(folder: str | Path, task: Task | None = None) -> list[Pair]:
    """All pairs of ``folder/input`` and ``folder/target`` matched by file stem, normalised."""
    return [make_pair(s, image_chw(read_image(a)), image_chw(read_image(b)), task)
            for s, a, b in paired_files(folder)]


def biosr_cells(root: str | Path, level: int | None = None) -> list[Pair]:
    """Every BioSR cell folder under ``root`` (those holding ``SIM_gt.mrc``) at ``level``
    (None: every level the cell has, one pair each, all named after the cell)."""
    root = Path(root)
    cells = sorted(p.parent for p in root.rglob("SIM_gt.mrc"))
    if not cells:
        raise UserError(f"{root}: no BioSR cell folders (with SIM_gt.mrc) found")
    pairs = []
    for cell in cells:
        levels = [level] if level else sorted(
            int(f.stem.rsplit("_", 1)[-1]) for f in cell.glob("RawSIMData_level_*.mrc"))
        for lv in levels:
            wf, gt = read_biosr_cell(cell, lv)
            pairs.append(make_pair(cell.relative_to(root).as_posix(), image_chw(wf), image_chw(gt)))
    return pairs


def simulated(kind: str, n: int, size: int, seed: int, level: int | None = None,
              cfg: SimulatorConfig | None = None, stream: int | None = None,
              progress: bool = False) -> list[Pair]:
    """``n`` simulator pairs: pair ``i`` from ``default_rng([seed, i])`` (as ``microdiff
    simulate`` writes them), or from ``default_rng([seed, i, stream, STREAM_TAG])`` when
    ``stream`` is given (training and validation pools: never equal to simulated files;
    the non-zero tag matters, as trailing zeros of a seed list are ignored)."""
    out = []
    for i in tqdm(range(n), desc=f"simulating {kind}", disable=not progress, dynamic_ncols=True):
        entropy = [seed, i] if stream is None else [seed, i, stream, STREAM_TAG]
        p = simulate_pair(kind, size, np.random.default_rng(entropy), cfg, level)
        out.append(make_pair(f"{kind}_{i:05d}", p.low[None], p.target[None]))
    return out


def rotate_flip(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random 90° rotation and (half the time) horizontal flip of ``x`` and ``y``
    ``[B, C, H, W]`` (the dihedral augmentation of training batches)."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (2, 3))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        x, y = x.flip(3), y.flip(3)
    return x, y


def split_by_name(pairs: list[Pair], val_fraction: float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """Deterministic split by whole images: pairs sharing a name (one BioSR cell at several
    levels) land on the same side; at least one name on each side when there are two or
    more names and ``val_fraction`` > 0."""
    if not 0 <= val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    names = list(dict.fromkeys(p.name for p in pairs))
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)
    val = {names[int(i)] for i in order[:n_val]}
    return [p for p in pairs if p.name not in val], [p for p in pairs if p.name in val]


def random_patches(
    pairs: list[Pair],
    batch: int,
    patch: int,
    generator: torch.Generator,
    min_contrast: float = 0.0,
    max_tries: int = 20,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of aligned patches: x, y ``[B, C, P, P]`` and low ``[B, C, P/s, P/s]``.

    Patch corners sit on multiples of the scale factor, so the low-resolution patch covers
    exactly the target patch. ``min_contrast`` > 0 rejects nearly empty patches: a patch is
    kept when its target's 99th − 1st percentile is at least that fraction of the
    image's (up to ``max_tries`` draws; the last draw is kept).
    """
    xs, ys, lows = [], [], []
    for _ in range(batch):
        p = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        s = p.scale
        H, W = p.y.shape[-2:]
        if patch > min(H, W) or patch % s:
            raise ShapeError(f"patch {patch} must be a multiple of {s} and fit in {H}x{W} ({p.name})")
        full = float(p.y.quantile(0.99) - p.y.quantile(0.01)) if min_contrast > 0 else 0.0
        for _ in range(max_tries):
            r = int(torch.randint((H - patch) // s + 1, (1,), generator=generator)) * s
            c = int(torch.randint((W - patch) // s + 1, (1,), generator=generator)) * s
            y = p.y[:, r: r + patch, c: c + patch]
            if min_contrast <= 0 or float(y.quantile(0.99) - y.quantile(0.01)) >= min_contrast * full:
                break
        xs.append(p.x[:, r: r + patch, c: c + patch])
        ys.append(y)
        lows.append(p.low[:, r // s: (r + patch) // s, c // s: (c + patch) // s])
    return torch.stack(xs), torch.stack(ys), torch.stack(lows)
