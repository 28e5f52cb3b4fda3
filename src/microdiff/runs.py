"""``microdiff train``: a training run in its folder, with checkpoints and exact resume.

:func:`train_run` builds the data of ``cfg.data``, trains ``cfg.train.steps`` steps with a
:class:`~microdiff.train.Trainer` and keeps the run folder up to date::

    RUN/config.yaml          the resolved config
    RUN/stats.jsonl          one JSON line per log interval and per validation
    RUN/checkpoints/         full state every ``checkpoint_every`` steps, ``latest`` pointer
    RUN/montages/            validation montages (input | mean | std | error | target)
    RUN/model/               the inference bundle (EMA weights), refreshed at checkpoints

The batch, the diffusion noise and every other random draw of step ``s`` come from
generators seeded with ``(train.seed, s)``, so ``--resume`` continues exactly: 20 steps
straight and 10 + 10 resumed give the same weights. SIGINT/SIGTERM save a checkpoint and
stop (:mod:`microdiff.signals`). Under ``torchrun`` every process calls :func:`train_run`;
rank 0 alone writes the folder, logs and validates (:mod:`microdiff.distributed`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .calibrate_files import fit_maps, held_out_maps
from .calibration import default_unit
from .checkpoint import (
    latest_checkpoint,
    load_training_state,
    save_bundle,
    save_training_state,
    write_calibration,
)
from .config import Config, config_to_yaml
from .data.io import atomic_write_bytes
from .data.sources import SeedPurpose, TrainingData, load_training_data, step_seed, task_of
from .devices import resolve_device
from .distributed import World
from .errors import ConfigError, UserError
from .evaluation import validate
from .models import build_model
from .predictor import load
from .signals import Interrupted, StopSignals
from .train import Trainer, TrainingDiverged


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
        lines = str(err).splitlines()
        raise ConfigError(f"{path}: its config does not fit this microdiff version "
                          f"({lines[1] if len(lines) > 1 else err}); "
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
    """Train ``cfg`` into the run folder ``out`` (new, or continued with ``resume``)."""
    world, created = distributed.start(cfg.train.device)
    try:
        run = _Run(cfg, Path(out), resume, progress, world)
        return run.train()
    finally:
        distributed.stop(created)


class _Run:
    """One rank's part of a run: folder, data, trainer and the jobs of the loop."""

    def __init__(self, cfg: Config, out: Path, resume: bool, progress: bool, world: World) -> None:
        tc = cfg.train
        self.cfg, self.out, self.world = cfg, out, world
        self.device = distributed.local_device(resolve_device(tc.device), world)
        world.shard(tc.batch_size)  # a clear error when the batch does not split over the ranks
        state = _prepare_folder(out, cfg, resume, self.device)
        world.barrier()  # every rank has checked the folder before rank 0 writes to it
        self.main = world.is_main
        self.progress = progress and self.main
        self.data = load_training_data(cfg.data, tc.seed, progress=self.progress)
        _check_channels(self.data, cfg)
        torch.manual_seed(tc.seed)
        self.trainer = Trainer(build_model(cfg.model), tc, self.device, world=world)
        if state is not None:
            self.trainer.load_state_dict(state)
        self.start = self.last_saved = self.trainer.step
        if self.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out / "config.yaml", config_to_yaml(cfg).encode(), overwrite=True)
        self.stats = _Stats(out / "stats.jsonl", self.start if resume else None) if self.main else None
        self.val_x, self.val_y = self.data.validation(cfg.data.size, cfg.data.n_val)

    def checkpoint(self) -> None:
        """Training state and the inference bundle (EMA weights), on rank 0."""
        if self.main:
            cfg, trainer = self.cfg, self.trainer
            payload = trainer.state_dict() | {"config": cfg.model_dump(mode="json")}
            save_training_state(self.out / "checkpoints", payload, trainer.step,
                                cfg.train.keep_checkpoints)
            save_bundle(self.out / "model", trainer.ema, cfg.model, cfg.sample, scale=self.data.scale,
                        pixel_size_um=self.data.pixel_size_um, overwrite=True, task=task_of(cfg.data))
        self.last_saved = self.trainer.step

    def validate(self, final: bool = False) -> dict[str, float]:
        """Posterior-mean metrics of the EMA model on the held-out crops (rank 0); the final
        one also calibrates the bundle's std and interval (``train.calibrate``)."""
        if not self.main:
            return {}
        cfg, step = self.cfg, self.trainer.step
        steps, samples = ((cfg.sample.steps, cfg.sample.samples) if final
                          else (cfg.train.val_steps, cfg.train.val_samples))
        res = validate(self.trainer.ema, self.val_x, self.val_y, cfg, steps, samples, cfg.train.seed,
                       self.out / "montages" / f"step_{step:08d}.png")
        self.stats.write({"step": step, "kind": "validation", "sample_steps": steps,
                          "samples": samples} | res)
        if (final and cfg.train.calibrate and self.trainer.ema.generative
                and (samples >= 2 or cfg.sample.uncertainty == "head")):
            self._calibrate(samples, steps)
        return res

    def _calibrate(self, samples: int, steps: int) -> None:
        """Fit the calibration on the held-out images (at most ``data.n_val``) predicted whole
        by the bundle just saved, exactly as ``predict`` and ``microdiff calibrate`` predict
        them, and store it in the bundle. Not on the training-size validation crops: a
        network's std depends on the size of its input (GroupNorm statistics), so a map
        fitted on crops mis-scales whole images (docs/benchmarks.md, *How many images
        calibration needs*)."""
        predictor = load(self.out / "model", str(self.device))
        pairs = [(p.x, p.y.numpy()) for p in self.data.val[: self.cfg.data.n_val]]
        maps = held_out_maps(predictor, pairs, samples, steps, self.cfg.train.seed, self.progress)
        tile = max(4, min(32, min(min(std.shape) for std, *_ in maps) // 2))  # ≥ 4 tiles per image
        intensity = self.cfg.train.calibrate_intensity and predictor.task.target_self_normalised
        cal = fit_maps(maps, intensity, tile=tile, samples=samples, steps=steps,
                       unit=default_unit(self.cfg.sample.uncertainty),
                       source=f"{len(pairs)} held-out images of {self.out}")
        write_calibration(self.out / "model", cal)
        if self.progress:
            interval = (f"interval ±{cal.interval_factor:.2f}·std" if cal.interval_factor is not None
                        else f"no interval ({cal.units} {cal.unit}s are too few to certify it)")
            print(f"calibrated on {cal.images} held-out images: ±1σ coverage {cal.coverage_before:.2f} → "
                  f"{cal.coverage_after:.2f}; {interval} (microdiff calibrate refits it on held-out pairs)")

    def step(self) -> dict[str, float]:
        """One training step with the random draws of its (seed, step)."""
        tc, s = self.cfg.train, self.trainer.step
        torch.manual_seed(step_seed(tc.seed, s, SeedPurpose.GLOBAL))
        gen = torch.Generator(device=self.device).manual_seed(step_seed(tc.seed, s, SeedPurpose.NOISE))
        x, y = self.data.batch(s, self.cfg.data, tc.batch_size, tc.seed)  # global: ranks take slices
        return self.trainer.train_step(x, y, gen)

    def train(self) -> RunResult:
        """The loop up to ``train.steps``, the last checkpoint and the final validation."""
        tc, trainer = self.cfg.train, self.trainer
        if self.progress:
            n_params = sum(p.numel() for p in trainer.model.parameters())
            ranks = f" x {self.world.size} processes" if self.world.distributed else ""
            print(f"train: {self.data.source}; {len(self.data.val)} held out; {n_params / 1e6:.2f} M "
                  f"parameters; {_describe(self.cfg)}; steps {self.start} → {tc.steps} on "
                  f"{self.device}{ranks}")
        bar = tqdm(total=tc.steps, initial=self.start, desc="training", disable=not self.progress,
                   dynamic_ncols=True)
        self._t0 = time.perf_counter()
        try:
            with StopSignals() as stop:
                while trainer.step < tc.steps:
                    self._after_step(self.step(), bar)
                    if stop.any_rank(self.world):  # SIGINT/SIGTERM: save this step, then stop
                        self._stop(stop)
        except TrainingDiverged as err:
            raise TrainingDiverged(f"{err}. The last good checkpoint (step {self.last_saved}) is in "
                                   f"{self.out / 'checkpoints'}") from None
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once
            raise UserError(f"interrupted at step {trainer.step}; resume from the last checkpoint "
                            f"(step {self.last_saved}) with: microdiff train --out {self.out} "
                            "--resume") from None
        finally:
            bar.close()
        if self.last_saved != trainer.step or self.start == trainer.step:
            self.checkpoint()
        final = self.validate(final=True)
        self.world.barrier()  # the other ranks return once rank 0 has written the final model
        trainer.model.eval()
        return RunResult(self.out, trainer, self.data, final)

    def _after_step(self, record: dict[str, float], bar: tqdm) -> None:
        """Log, checkpoint and validate at their intervals."""
        tc, step = self.cfg.train, self.trainer.step
        bar.update(1)
        if self.main and (step % tc.log_every == 0 or step == tc.steps):
            seconds = round(time.perf_counter() - self._t0, 3)
            self.stats.write({"step": step, "kind": "train", "seconds": seconds} | record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if step % tc.checkpoint_every == 0 and self.trainer.bad == 0:  # never mid-streak
            self.checkpoint()
        if tc.val_every and step % tc.val_every == 0 and step < tc.steps:
            res = self.validate()
            if self.progress and res:
                name = task_of(self.cfg.data).baseline_name
                versus = f" ({name} {res['val_psnr_baseline']:.2f})" if name else ""
                bar.write(f"step {step}: validation PSNR {res['val_psnr']:.2f} dB{versus}, "
                          f"SSIM {res['val_ssim']:.3f}")

    def _stop(self, stop: StopSignals) -> None:
        if self.trainer.bad == 0 and self.last_saved != self.trainer.step:
            self.checkpoint()
        raise Interrupted(f"stopped by {stop.name} at step {self.trainer.step}; the checkpoint of step "
                          f"{self.last_saved} is saved: continue with microdiff train --out {self.out} "
                          "--resume")
