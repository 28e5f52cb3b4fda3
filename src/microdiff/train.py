"""A short, explicit training loop (single process; the full workflow extends it).

Adam with linear LR warm-up, gradient clipping, an EMA copy of every weight from step 0,
a guard that skips non-finite losses, and a progress bar with the loss.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .diffusion import CVDM
from .errors import UserError

MAX_BAD_STEPS = 10


class TrainingDiverged(UserError):
    """The loss stayed non-finite for too many consecutive steps."""


@dataclass
class TrainResult:
    """The trained model, its EMA copy and per-step loss history (weighted total and terms)."""

    model: CVDM
    ema: CVDM
    history: list[dict[str, float]] = field(default_factory=list)


def random_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless random mini-batches from paired tensors ``[N, C, H, W]``, with random
    flips and 90° rotations applied identically to x and y."""
    n = x.shape[0]
    while True:
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        xb, yb = x[idx], y[idx]
        k = int(torch.randint(0, 4, (1,), generator=generator))
        flip = bool(torch.randint(0, 2, (1,), generator=generator))
        xb, yb = torch.rot90(xb, k, (2, 3)), torch.rot90(yb, k, (2, 3))
        if flip:
            xb, yb = xb.flip(3), yb.flip(3)
        yield xb, yb


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, for parameters and floating buffers."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        if e.dtype.is_floating_point:
            e.copy_(b)


def train(
    model: CVDM,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps on ``batches``; returns model, EMA and history."""
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    history: list[dict[str, float]] = []
    bad = 0
    bar = tqdm(range(cfg.steps), desc="training", disable=not progress, dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
        x, y = next(batches)
        terms = model.loss(x.to(device), y.to(device), generator=gen)
        loss = model.total_loss(terms)
        if not torch.isfinite(loss):
            bad += 1
            if bad >= MAX_BAD_STEPS:
                raise TrainingDiverged(
                    f"the loss was not finite for {bad} consecutive steps (last at step {step}); "
                    "lower train.lr or raise train.warmup"
                )
            continue
        bad = 0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, model, cfg.ema)
        record = {"loss": loss.item()} | {k: v.mean().item() for k, v in terms.items()}
        history.append(record)
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{record['loss']:.4f}", eps=f"{record['eps']:.4f}")
    model.eval()
    if not history or not math.isfinite(history[-1]["loss"]):
        raise TrainingDiverged("training finished without a single finite loss")
    return TrainResult(model=model, ema=ema, history=history)
