"""The optimiser step: :class:`Trainer` owns the model, its EMA copy (from step 0), the
optimiser (Adam or AdamW) and the step counter.

One :meth:`Trainer.train_step` is LR warm-up → loss (bf16 autocast on CUDA; the schedule
math stays float32) → backward → gradient clipping → update → EMA. A non-finite loss or
gradient skips the update; ``MAX_BAD_STEPS`` in a row stop training. On CUDA the weights
and batches are channels-last and Adam is fused; ``train.compile`` compiles the model's
main network with ``torch.compile``. Under ``torchrun`` the loss is wrapped in
DistributedDataParallel (:mod:`microdiff.distributed`). :meth:`Trainer.state_dict` is
everything a resume needs. The run folder around it (``microdiff train``) is
:mod:`microdiff.runs`.
"""

from __future__ import annotations

import copy
import math

import torch

from .config import TrainConfig
from .distributed import World
from .errors import UserError
from .models import ImageModel
from .options import GRAD_CLIP_SCOPES, choose

MAX_BAD_STEPS = 10


class TrainingDiverged(UserError):
    """The loss or gradient stayed non-finite for too many consecutive steps."""


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, for parameters and floating buffers."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        if e.dtype.is_floating_point:
            e.copy_(b)


class _Objective(torch.nn.Module):
    """The model's loss as ``forward``, so DistributedDataParallel can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor, noise: tuple | None,
                head_mean: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if head_mean is None:
            return self.model.loss(x, y, noise=noise)
        return self.model.loss(x, y, noise=noise, head_mean=head_mean)


class Trainer:
    """Model, EMA, optimiser and step; :meth:`state_dict` is everything a resume needs.

    In a multi-process ``world`` (:mod:`microdiff.distributed`) the model is wrapped in
    DistributedDataParallel and :meth:`train_step` trains on this rank's slice of the
    global batch; model, EMA and optimiser stay identical on every rank."""

    def __init__(self, model: ImageModel, cfg: TrainConfig, device: torch.device | str = "cpu",
                 autocast_dtype: torch.dtype | None = None, world: World | None = None) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.world = world or World()
        cuda = self.device.type == "cuda"
        last = cuda if cfg.channels_last is None else cfg.channels_last
        self.memory_format = torch.channels_last if last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.objective: torch.nn.Module = _Objective(self.model)
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if cuda else None
            self.objective = DistributedDataParallel(self.objective, device_ids=ids)
        if cfg.compile:  # the U-Net that runs every step; the schedule's autograd-in-the-loss
            # derivatives need double backward, which compiled graphs do not support
            self.model.main_network.compile()  # in place: the state dict keeps its keys
        kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.opt = kind(self.model.parameter_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                        fused=True if cuda else None)  # one kernel for the update on a GPU
        if autocast_dtype is None and self.device.type == "cuda" and cfg.bf16:
            autocast_dtype = torch.bfloat16
        self.autocast_dtype = autocast_dtype
        self.step, self.bad = 0, 0

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then constant (independent of the total number of steps)."""
        w = self.cfg.warmup
        return self.cfg.lr * min(1.0, (step + 1) / w) if w else self.cfg.lr

    def ema_decay(self, step: int) -> float:
        """The EMA decay after update ``step`` (1-based): ``train.ema``, or with
        ``train.ema_warmup`` min(ema, (1 + step) / (10 + step)), so the early average follows
        the weights instead of keeping the random initialisation (at 0.99 from step 0, 8 % of
        the evaluated weights after 250 steps are the initialisation)."""
        if not self.cfg.ema_warmup:
            return self.cfg.ema
        return min(self.cfg.ema, (1 + step) / (10 + step))

    def _clip(self) -> float:
        """Clip the gradient norm to ``train.grad_clip``: of all parameters together
        (``global``), or of each of the model's modules on its own (``per-module``: a spike in
        the schedule's gradient no longer shrinks the denoiser's step). Returns the total
        norm before clipping (non-finite when a gradient is)."""
        if choose(self.cfg.grad_clip_scope, GRAD_CLIP_SCOPES, "gradient clip scope") == "global":
            return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        groups = [[p for p in group if p.grad is not None] for group in self.model.clip_groups()]
        norms = [float(torch.nn.utils.clip_grad_norm_(g, self.cfg.grad_clip)) for g in groups if g]
        return math.sqrt(sum(n * n for n in norms))

    @torch.no_grad()
    def _head_mean(self, x: torch.Tensor) -> torch.Tensor | None:
        """The EMA model's μ(x) for a model with a variance head (None otherwise): the head
        learns the error of the mean that predicts (the EMA's), not of the live network's,
        which is larger (on issue 18's runs it made the head's std about 1.2× too wide)."""
        if getattr(self.model, "var_net", None) is None:
            return None
        return self.ema.predict_mean(x)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
                   ) -> dict[str, float]:
        """One update on the global batch ``x, y`` ``[B, C, H, W]`` (any device; a rank uses
        its slice); returns the loss terms (batch means over all ranks), ``loss``, ``lr``,
        ``grad_norm`` and ``skipped`` (1.0 when not applied)."""
        lr = self.lr_at(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.step += 1
        noise = self.model.draw_noise(y.shape, self.device, generator)  # for the global batch
        part = self.world.shard(x.shape[0])
        x, y = (t[part].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
                for t in (x, y))
        if noise is not None:
            noise = (noise[0][part], noise[1][part])
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            terms = self.objective(x, y, noise, self._head_mean(x))
            loss = self.model.total_loss(terms)
        record = {"loss": loss.item()} | {k: v.detach().mean().item() for k, v in terms.items()}
        record = self.world.mean_dict(record) | {"lr": lr}
        self.opt.zero_grad(set_to_none=True)
        grad_norm = float("nan")
        if math.isfinite(record["loss"]):  # the mean over ranks: all ranks agree
            loss.backward()
            grad_norm = self._clip()
        record["grad_norm"] = grad_norm
        if not math.isfinite(grad_norm):  # non-finite loss or gradient: skip the update
            self.opt.zero_grad(set_to_none=True)
            self.bad += 1
            if self.bad >= MAX_BAD_STEPS:
                raise TrainingDiverged(
                    f"the loss or gradient was not finite for {self.bad} consecutive steps "
                    f"(last at step {self.step}); lower train.lr or raise train.warmup")
            return record | {"skipped": 1.0}
        self.bad = 0
        self.opt.step()
        ema_update(self.ema, self.model, self.ema_decay(self.step))
        return record | {"skipped": 0.0}

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.opt.state_dict(), "step": self.step, "bad": self.bad, "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.bad = int(state["step"]), int(state.get("bad", 0))
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
