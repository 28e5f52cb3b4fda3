"""The training loop: one explicit loop, a run folder, checkpoints and exact resume.

:class:`Trainer` owns the model, its EMA copy (from step 0), the optimiser (Adam or AdamW)
and the step counter; one :meth:`Trainer.train_step` is LR warm-up → loss (bf16 autocast on
CUDA; the schedule math stays float32) → backward → gradient clipping → update → EMA. A
non-finite loss or gradient skips the update; ``MAX_BAD_STEPS`` in a row stop training.
On CUDA the weights and batches are channels-last and Adam is fused; ``train.compile``
compiles the denoiser with ``torch.compile``. Under ``torchrun`` the loss is wrapped in
DistributedDataParallel (:mod:`microdiff.distributed`).

:func:`train_run` is ``microdiff train``: it builds the data of ``cfg.data``, trains for
``cfg.train.steps`` steps and keeps the run folder up to date::

    RUN/config.yaml          the resolved config
    RUN/stats.jsonl          one JSON line per log interval and per validation
    RUN/checkpoints/         full state every ``checkpoint_every`` steps, ``latest`` pointer
    RUN/montages/            validation montages (input | mean | std | error | target)
    RUN/model/               the inference bundle (EMA weights), refreshed at checkpoints

The batch, the diffusion noise and every other random draw of step ``s`` come from
generators seeded with ``(train.seed, s)``, so ``--resume`` continues exactly: 20 steps
straight and 10 + 10 resumed give the same weights.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed, metrics
from .checkpoint import latest_checkpoint, load_training_state, save_bundle, save_training_state
from .config import Config, TrainConfig, config_to_yaml
from .data.io import atomic_write_bytes
from .data.sources import TrainingData, load_training_data, step_seed, task_of
from .devices import resolve_device
from .diffusion import CVDM
from .distributed import World
from .errors import ConfigError, UserError
from .regression import build_model

MAX_BAD_STEPS = 10
NOISE, GLOBAL = 3, 2  # step_seed purposes (1 is the batch)


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


def parameter_groups(model: torch.nn.Module) -> list[dict]:
    """One optimiser group, or two when the schedule has its own ``lr_scale`` ≠ 1 (the
    schedule's parameters then carry ``lr_scale`` and :class:`Trainer` multiplies it in)."""
    schedule = getattr(model, "schedule", None)
    scale = getattr(schedule, "lr_scale", 1.0)
    if schedule is None or scale == 1.0 or not any(True for _ in schedule.parameters()):
        return [{"params": list(model.parameters())}]
    own = {id(p) for p in schedule.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in own]},
            {"params": list(schedule.parameters()), "lr_scale": scale}]


class _Objective(torch.nn.Module):
    """The model's loss as ``forward``, so DistributedDataParallel can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor, noise: tuple | None) -> dict[str, torch.Tensor]:
        return self.model.loss(x, y, noise=noise)


class Trainer:
    """Model, EMA, optimiser and step; :meth:`state_dict` is everything a resume needs.

    In a multi-process ``world`` (:mod:`microdiff.distributed`) the model is wrapped in
    DistributedDataParallel and :meth:`train_step` trains on this rank's slice of the
    global batch; model, EMA and optimiser stay identical on every rank."""

    def __init__(self, model: CVDM, cfg: TrainConfig, device: torch.device | str = "cpu",
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
            net = getattr(self.model, "denoiser", None) or self.model.net
            net.compile()  # in place: the state dict keeps its keys
        kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.opt = kind(parameter_groups(self.model), lr=cfg.lr, weight_decay=cfg.weight_decay,
                        fused=True if cuda else None)  # one kernel for the update on a GPU
        if autocast_dtype is None and self.device.type == "cuda" and cfg.bf16:
            autocast_dtype = torch.bfloat16
        self.autocast_dtype = autocast_dtype
        self.step, self.bad = 0, 0

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then constant (independent of the total number of steps)."""
        w = self.cfg.warmup
        return self.cfg.lr * min(1.0, (step + 1) / w) if w else self.cfg.lr

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
            terms = self.objective(x, y, noise)
            loss = self.model.total_loss(terms)
        record = {"loss": loss.item()} | {k: v.detach().mean().item() for k, v in terms.items()}
        record = self.world.mean_dict(record) | {"lr": lr}
        self.opt.zero_grad(set_to_none=True)
        grad_norm = float("nan")
        if math.isfinite(record["loss"]):  # the mean over ranks: all ranks agree
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
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
        ema_update(self.ema, self.model, self.cfg.ema)
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


# --- in-memory training (tests, benchmarks) -----------------------------------------------
@dataclass
class TrainResult:
    """The trained model, its EMA copy and per-step records (weighted total and terms)."""

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


def train(model: CVDM, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
          progress: bool = True, device: torch.device | str = "cpu") -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps on ``batches`` in memory (no run folder)."""
    torch.manual_seed(cfg.seed)
    trainer = Trainer(model, cfg, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    history = []
    for _ in tqdm(range(cfg.steps), desc="training", disable=not progress, dynamic_ncols=True):
        x, y = next(batches)
        record = trainer.train_step(x.to(device), y.to(device), gen)
        if not record["skipped"]:
            history.append(record)
    model.eval()
    if not history:
        raise TrainingDiverged("training finished without a single finite loss")
    return TrainResult(model=trainer.model, ema=trainer.ema, history=history)


# --- the run folder -------------------------------------------------------------------------
@torch.no_grad()
def validate(model: CVDM, x: torch.Tensor, y: torch.Tensor, cfg: Config, steps: int, samples: int,
             seed: int, montage_path: Path | None = None, montage_rows: int = 4) -> dict[str, float]:
    """Posterior-mean PSNR/SSIM (after affine matching) of ``model`` and of the task's
    classical baseline (``*_bicubic``: the bicubic input for sr, TIE for qpi-2shot, NaN where
    there is none) on ``x, y`` ``[N, C, H, W]``; optionally a montage of the first
    ``montage_rows``."""
    from .plots import montage

    device = next(model.parameters()).device
    s = cfg.sample
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.sample(x.to(device), steps=steps, samples=samples, generator=gen, sampler=s.sampler,
                       eta=s.eta, grid=s.grid, clip=s.clip)
    mean, std = out.mean.float().cpu().numpy(), out.std.float().cpu().numpy()
    xs, ys = x.numpy(), y.numpy()
    task = task_of(cfg.data)
    res = {"val_psnr": [], "val_ssim": [], "val_psnr_bicubic": [], "val_ssim_bicubic": []}
    for i in range(len(ys)):
        res["val_psnr"].append(metrics.psnr(mean[i, 0], ys[i, 0]))
        res["val_ssim"].append(metrics.ssim(mean[i, 0], ys[i, 0]))
        base = task.baseline(xs[i])
        res["val_psnr_bicubic"].append(metrics.psnr(base, ys[i, 0]) if base is not None else math.nan)
        res["val_ssim_bicubic"].append(metrics.ssim(base, ys[i, 0]) if base is not None else math.nan)
    if montage_path is not None:
        rows = [(xs[i, 0], mean[i, 0], std[i, 0], np.abs(mean[i, 0] - ys[i, 0]), ys[i, 0])
                for i in range(min(montage_rows, len(ys)))]
        montage(montage_path, rows)
    return {k: float(np.mean(v)) for k, v in res.items()}


class Interrupted(UserError):
    """SIGINT (Ctrl-C) or SIGTERM stopped training after saving a checkpoint."""


class _StopSignals:
    """While active, SIGINT and SIGTERM only set :attr:`received`: the training loop saves a
    checkpoint after the step in progress and stops. A second signal acts at once (the
    previous handlers are back). Does nothing outside the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def any_rank(self, world: World) -> bool:
        """Whether any rank received a signal (a collective in a multi-process run)."""
        here = self.received is not None
        return world.mean_dict({"stop": float(here)})["stop"] > 0 if world.distributed else here


@dataclass
class RunResult:
    """What :func:`train_run` leaves behind: the folder, the trainer and the data it used."""

    folder: Path
    trainer: Trainer
    data: TrainingData
    final: dict[str, float]


def _parse(line: str) -> dict | None:
    try:
        return json.loads(line)
    except json.JSONDecodeError:  # the last line of a killed run can be torn
        return None


class _Stats:
    """Append-only ``stats.jsonl``; on resume, lines after the resumed step (and a torn last
    line of a killed run) are dropped."""

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        if keep_until is not None and path.exists():
            kept = [ln for ln in path.read_text(errors="replace").splitlines()
                    if (rec := _parse(ln)) is not None and rec.get("step", 0) <= keep_until]
            atomic_write_bytes(path, "".join(ln + "\n" for ln in kept).encode(), overwrite=True)

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _describe(cfg: Config) -> str:
    m = cfg.model
    return f"regression ({m.regression_loss})" if m.kind == "regression" else f"schedule {m.schedule.kind}"


def _check_channels(data: TrainingData, cfg: Config) -> None:
    """The data's channels against the model's, before a network sees them."""
    pair = data.train[0]
    where = cfg.data.path or "the simulated data"
    for side, have, key in (("inputs", pair.x.shape[0], "in_channels"),
                            ("targets", pair.y.shape[0], "out_channels")):
        want = getattr(cfg.model, key)
        if have != want:
            raise ConfigError(f"{where}: the {side} have {have} channel(s) but model.{key} is {want}; "
                              f"set --set model.{key}={have} (a residual target also needs "
                              "in_channels = out_channels) or give images with that many channels")


def _check_resumable(saved: dict, cfg: Config, path: Path) -> None:
    try:
        old = Config.model_validate(saved)
    except ValueError as err:  # pydantic's ValidationError: keys of another version
        raise ConfigError(f"{path}: its config does not fit this microdiff version "
                          f"({str(err).splitlines()[1] if len(str(err).splitlines()) > 1 else err}); "
                          "resume with the version that wrote it, or start a new run") from None
    for section in ("model", "data"):
        if getattr(old, section) != getattr(cfg, section):
            raise ConfigError(f"the {section} section differs from the one {path} was trained with; "
                              "on --resume only train.* and sample.* may change")
    if old.train.seed != cfg.train.seed or old.train.batch_size != cfg.train.batch_size:
        raise ConfigError("train.seed and train.batch_size cannot change on --resume")


def _prepare_folder(out: Path, cfg: Config, resume: bool, device: torch.device) -> dict | None:
    """Check ``out`` and return the checkpoint to resume from (None for a new run)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    if not resume:
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out} is not empty; continue that run with --resume, or choose another --out")
        return None
    path = latest_checkpoint(out / "checkpoints") if out.is_dir() else None
    if path is None:
        raise UserError(f"{out} holds no checkpoint to resume from; start it without --resume")
    state = load_training_state(path, device)
    _check_resumable(state["config"], cfg, path)
    return state


def train_run(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> RunResult:
    """Train ``cfg`` into the run folder ``out`` (new, or continued with ``resume``).

    Under ``torchrun`` every process calls this; rank 0 alone writes the folder, logs and
    validates (see :mod:`microdiff.distributed`)."""
    world, created = distributed.start(cfg.train.device)
    try:
        return _train_run(cfg, Path(out), resume, progress, world)
    finally:
        distributed.stop(created)


def _train_run(cfg: Config, out: Path, resume: bool, progress: bool, world: World) -> RunResult:
    tc = cfg.train
    device = distributed.local_device(resolve_device(tc.device), world)
    world.shard(tc.batch_size)  # a clear error when the batch does not split over the ranks
    state = _prepare_folder(out, cfg, resume, device)
    world.barrier()  # every rank has checked the folder before rank 0 writes to it
    main = world.is_main
    progress = progress and main
    data = load_training_data(cfg.data, tc.seed, progress=progress)
    _check_channels(data, cfg)
    torch.manual_seed(tc.seed)
    trainer = Trainer(build_model(cfg.model), tc, device, world=world)
    if state is not None:
        trainer.load_state_dict(state)
    start = trainer.step
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "config.yaml", config_to_yaml(cfg).encode(), overwrite=True)
    stats = _Stats(out / "stats.jsonl", start if resume else None) if main else None
    val_x, val_y = data.validation(cfg.data.size, cfg.data.n_val)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    if progress:
        ranks = f" x {world.size} processes" if world.distributed else ""
        print(f"train: {data.source}; {len(data.val)} held out; {n_params / 1e6:.2f} M parameters; "
              f"{_describe(cfg)}; steps {start} → {tc.steps} on {device}{ranks}")

    def checkpoint() -> Path | None:
        if not main:
            return None
        payload = trainer.state_dict() | {"config": cfg.model_dump(mode="json")}
        path = save_training_state(out / "checkpoints", payload, trainer.step, tc.keep_checkpoints)
        save_bundle(out / "model", trainer.ema, cfg.model, cfg.sample, scale=data.scale,
                    pixel_size_um=data.pixel_size_um, overwrite=True, task=task_of(cfg.data).to_dict())
        return path

    def run_validation(final: bool = False) -> dict[str, float]:
        if not main:
            return {}
        montage = out / "montages" / f"step_{trainer.step:08d}.png"
        steps, samples = (cfg.sample.steps, cfg.sample.samples) if final else (tc.val_steps, tc.val_samples)
        res = validate(trainer.ema, val_x, val_y, cfg, steps, samples, tc.seed, montage)
        stats.write({"step": trainer.step, "kind": "validation", "sample_steps": steps,
                     "samples": samples} | res)
        return res

    t0, last_saved = time.perf_counter(), start
    bar = tqdm(total=tc.steps, initial=start, desc="training", disable=not progress, dynamic_ncols=True)
    stop = _StopSignals()
    try:
        with stop:
            while trainer.step < tc.steps:
                s = trainer.step
                torch.manual_seed(step_seed(tc.seed, s, GLOBAL))
                gen = torch.Generator(device=device).manual_seed(step_seed(tc.seed, s, NOISE))
                x, y = data.batch(s, cfg.data, tc.batch_size, tc.seed)  # global: ranks take slices
                record = trainer.train_step(x, y, gen)
                bar.update(1)
                if main and (trainer.step % tc.log_every == 0 or trainer.step == tc.steps):
                    stats.write({"step": trainer.step, "kind": "train",
                                 "seconds": round(time.perf_counter() - t0, 3)} | record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                if trainer.step % tc.checkpoint_every == 0 and trainer.bad == 0:  # never mid-streak
                    checkpoint()
                    last_saved = trainer.step
                if tc.val_every and trainer.step % tc.val_every == 0 and trainer.step < tc.steps:
                    res = run_validation()
                    if progress and res:
                        bar.write(f"step {trainer.step}: validation PSNR {res['val_psnr']:.2f} dB "
                                  f"(bicubic {res['val_psnr_bicubic']:.2f}), SSIM {res['val_ssim']:.3f}")
                if stop.any_rank(world):  # SIGINT/SIGTERM: save this step, then stop
                    if trainer.bad == 0 and last_saved != trainer.step:
                        checkpoint()
                        last_saved = trainer.step
                    why = signal.Signals(stop.received).name if stop.received else "a signal to another rank"
                    raise Interrupted(f"stopped by {why} at step {trainer.step}; the checkpoint of step "
                                      f"{last_saved} is saved: continue with microdiff train --out {out} "
                                      "--resume")
    except TrainingDiverged as err:
        raise TrainingDiverged(f"{err}. The last good checkpoint (step {last_saved}) is in "
                               f"{out / 'checkpoints'}") from None
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        raise UserError(f"interrupted at step {trainer.step}; resume from the last checkpoint "
                        f"(step {last_saved}) with: microdiff train --out {out} --resume") from None
    finally:
        bar.close()
    if last_saved != trainer.step or start == trainer.step:
        checkpoint()
    final = run_validation(final=True)
    world.barrier()  # the other ranks return once rank 0 has written the final model
    trainer.model.eval()
    return RunResult(out, trainer, data, final)
