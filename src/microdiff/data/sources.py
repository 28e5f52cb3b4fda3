"""Training data for a config: the pairs behind ``data.*`` and the batch of every step.

:func:`load_training_data` builds the training and validation pairs from a paired folder
(``data.path``; whole files held out) or a generator (the BioSR-like simulator or the
simple filaments), all percentile-normalised with the condition on the target grid.
:meth:`TrainingData.batch` is a pure function of ``(seed, step)``: a resumed run draws
exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import DataConfig
from ..errors import ShapeError, UserError
from .datasets import (
    STREAM_TAG,
    Pair,
    biosr_cells,
    make_pair,
    paired_files,
    paired_folder,
    random_patches,
    rotate_flip,
    simulated,
    split_by_name,
)
from .io import read_image
from .phase_truth import QPIConfig, phase_map, simulate_qpi
from .synthetic import SimulatorConfig, make_filament_pairs
from .tasks import Task

TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 1, 2, 3  # simulator streams (see datasets.simulated);
# TEST_STREAM: the demo's held-out evaluation images
VAL_SEED_OFFSET = 10_000  # filaments: held-out pairs from a disjoint seed


class SeedPurpose(IntEnum):
    """What a step's random draws are for (each gets its own generator seed)."""

    BATCH = 1  # which patches, where, and their augmentation
    GLOBAL = 2  # torch's global generator during the step (e.g. dropout)
    NOISE = 3  # the loss's draws: t and ε


def step_seed(seed: int, step: int, purpose: int = 0) -> int:
    """A 63-bit seed for ``(seed, step, purpose)`` (a :class:`SeedPurpose`); distinct tuples
    give unrelated seeds."""
    return int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(
        (seed * 1_000_003 + step) * 7 + purpose)))


@dataclass
class TrainingData:
    """train/val: normalised pairs; scale: the SR factor; pixel_size_um: the input pixel
    size (µm) when known; source: a short description for logs."""

    train: list[Pair]
    val: list[Pair]
    scale: int
    pixel_size_um: float | None
    source: str

    def batch(self, step: int, cfg: DataConfig, batch_size: int, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches ``x, y`` ``[B, C, size, size]`` for training step ``step``."""
        gen = torch.Generator().manual_seed(step_seed(seed, step, SeedPurpose.BATCH))
        x, y, _ = random_patches(self.train, batch_size, cfg.size, gen, cfg.min_contrast)
        if cfg.augment:
            x, y = rotate_flip(x, y, gen)
        return x.contiguous(), y.contiguous()

    def validation(self, size: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre crops ``x, y`` ``[N, C, size, size]`` of the first ``limit`` held-out
        images (crop corners on the scale grid)."""
        xs, ys = [], []
        for p in self.val[:limit]:
            H, W = p.y.shape[-2:]
            crop = min(size, H, W) // self.scale * self.scale
            r = (H - crop) // 2 // self.scale * self.scale
            c = (W - crop) // 2 // self.scale * self.scale
            xs.append(p.x[:, r: r + crop, c: c + crop])
            ys.append(p.y[:, r: r + crop, c: c + crop])
        if len({tuple(x.shape) for x in xs}) > 1:  # images smaller than the patch size
            crop = min(x.shape[-1] for x in xs)
            xs, ys = [x[..., :crop, :crop] for x in xs], [y[..., :crop, :crop] for y in ys]
        return torch.stack(xs), torch.stack(ys)


def _filament_pairs(cfg: DataConfig, n: int, seed: int, prefix: str) -> list[Pair]:
    imgs = make_filament_pairs(n, cfg.image_size, cfg.scale, cfg.photons, seed=seed)
    return [Pair(f"{prefix}_{i:05d}", imgs.low[i], imgs.x[i], imgs.y[i], cfg.scale) for i in range(n)]


def task_of(cfg: DataConfig) -> Task:
    """The :class:`~microdiff.data.tasks.Task` of a data config."""
    return Task(cfg.task, cfg.phase_range, cfg.qpi_input_norm, cfg.baseline_channel, cfg.tie_regularization,
                tuple(cfg.tie_extra_regularizations), cfg.data_consistency)


def qpi_pairs(cfg: DataConfig, n: int, seed: int, stream: int, progress: bool = False) -> list[Pair]:
    """``n`` simulated QPI pairs of ``cfg.task``: pair ``i`` from
    ``default_rng([seed, i, stream, STREAM_TAG])`` (never equal to ``microdiff simulate`` files)."""
    acq, task = QPIConfig(task=cfg.task, noise=cfg.noise), task_of(cfg)
    out = []
    for i in tqdm(range(n), desc=f"simulating {cfg.task}", disable=not progress, dynamic_ncols=True):
        rng = np.random.default_rng([seed, i, stream, STREAM_TAG])
        phi, _ = phase_map(cfg.phase_source, cfg.image_size, rng, cfg.phase_range, cfg.structure,
                           acq.pixel_um)
        stack, _ = simulate_qpi(phi, acq, rng, normalize=task.input_norm == "minmax")
        out.append(make_pair(f"{cfg.task}_{i:05d}", stack, phi[None], task))
    return out


def load_training_data(cfg: DataConfig, seed: int, progress: bool = True) -> TrainingData:
    """The training and validation pairs that ``cfg`` describes (``seed``: train.seed)."""
    if cfg.path is None and task_of(cfg).is_phase:
        train = qpi_pairs(cfg, cfg.n_train, seed, TRAIN_STREAM, progress)
        val = qpi_pairs(cfg, cfg.n_val, seed, VAL_STREAM)
        return TrainingData(train, val, 1, QPIConfig().pixel_um,
                            f"{cfg.n_train} simulated {cfg.task} pairs ({cfg.phase_source} phase) of "
                            f"{cfg.image_size}x{cfg.image_size}")
    if cfg.path is not None:
        root = Path(cfg.path)
        if not root.is_dir():
            raise UserError(f"data.path {cfg.path!r} is not a folder")
        biosr = not (root / "input").is_dir() and any(root.rglob("SIM_gt.mrc"))
        if biosr:
            pairs = biosr_cells(root, cfg.level)
            px = cfg.pixel_size_um or SimulatorConfig().input_pixel_um  # BioSR: 62.6 nm
        else:
            files = paired_files(root)
            pairs = paired_folder(root, task_of(cfg))
            px = read_image(files[0][1]).pixel_size or cfg.pixel_size_um
        if len({p.name for p in pairs}) < 2:
            raise UserError(f"{cfg.path}: need at least 2 images (one is held out for validation)")
        scales = {p.scale for p in pairs}
        if scales != {cfg.scale}:
            raise ShapeError(f"{cfg.path}: the pairs have scale factor(s) {sorted(scales)}, "
                             f"the config says data.scale={cfg.scale}")
        small = [p.name for p in pairs if min(p.y.shape[-2:]) < cfg.size]
        if small:
            raise ShapeError(f"{cfg.path}: target {small[0]!r} is smaller than the patch size "
                             f"data.size={cfg.size}; lower data.size")
        train, val = split_by_name(pairs, cfg.val_fraction, seed)
        return TrainingData(train, val, cfg.scale, px, f"{len(pairs)} pairs from {cfg.path}")
    if cfg.generator == "filaments":
        train = _filament_pairs(cfg, cfg.n_train, seed, "train")
        val = _filament_pairs(cfg, cfg.n_val, seed + VAL_SEED_OFFSET, "val")
        return TrainingData(train, val, cfg.scale, cfg.pixel_size_um,
                            f"{cfg.n_train} filament images of {cfg.image_size}x{cfg.image_size}")
    sim = SimulatorConfig(scale=cfg.scale)
    train = simulated(cfg.structure, cfg.n_train, cfg.image_size, seed, cfg.level, sim,
                      stream=TRAIN_STREAM, progress=progress)
    val = simulated(cfg.structure, cfg.n_val, cfg.image_size, seed, cfg.level, sim, stream=VAL_STREAM)
    return TrainingData(train, val, cfg.scale, sim.input_pixel_um,
                        f"{cfg.n_train} simulated {cfg.structure} images of "
                        f"{cfg.image_size}x{cfg.image_size}")
