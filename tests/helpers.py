"""Tiny models and configs that run in milliseconds on a CPU."""

from __future__ import annotations

import torch

from microdiff.config import Config, DataConfig, ModelConfig, TrainConfig
from microdiff.data.datasets import rotate_flip
from microdiff.diffusion import CVDM
from microdiff.nets.unet import UNetSpec
from microdiff.train import Trainer

KINDS = ["learned", "learned-exact", "fixed-linear", "fixed-cosine"]
TINY = UNetSpec(base_channels=8, channel_mults=[1, 2], num_res_blocks=1)


def tiny_model_config(kind: str = "learned", **overrides) -> ModelConfig:
    cfg = ModelConfig(denoiser=TINY, timesteps=200)
    cfg.schedule.kind = kind
    cfg.schedule.net = TINY
    cfg.schedule.time_hidden = 64
    cfg.zmd.net = TINY
    for key, value in overrides.items():
        if key == "zmd":
            cfg.zmd.enabled = value
        else:
            setattr(cfg, key, value)
    return cfg


def tiny_model(kind: str = "learned", seed: int = 0, **overrides) -> CVDM:
    torch.manual_seed(seed)
    return CVDM.from_config(tiny_model_config(kind, **overrides))


def tiny_config(steps: int = 3) -> Config:
    """Simulated 32² images, 16² patches, a tiny model: a training run takes seconds."""
    cfg = Config(model=tiny_model_config("learned", residual=True, target_scale=0.1))
    cfg.data = DataConfig(image_size=32, size=16, n_train=6, n_val=2)
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup = steps, 2, 1
    cfg.train.checkpoint_every, cfg.train.val_every, cfg.train.log_every = 5, 5, 1
    cfg.train.val_steps, cfg.train.val_samples = 2, 2
    cfg.sample.steps, cfg.sample.samples = 3, 2
    return cfg


def tiny_qpi_config(task: str = "qpi-2shot", steps: int = 3) -> Config:
    """:func:`tiny_config` for a QPI task: 2 (or 3) intensity channels in, phase out."""
    cfg = tiny_config(steps)
    cfg.model.residual = False  # before in_channels: the config is validated on assignment
    cfg.model.in_channels = 2 if task == "qpi-2shot" else 3
    cfg.model.target_scale = 0.25
    cfg.data = DataConfig(task=task, scale=1, image_size=32, size=16, n_train=4, n_val=2)
    return cfg


def fit(model, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> tuple[Trainer, list[dict]]:
    """Train ``model`` on the in-memory pairs ``x, y`` ``[N, C, H, W]`` with the real
    :class:`~microdiff.train.Trainer`: ``cfg.steps`` batches of ``cfg.batch_size`` drawn at
    random (with the training data's rotations and flips) from a generator seeded with
    ``cfg.seed``. Returns the trainer and the records of the applied steps."""
    torch.manual_seed(cfg.seed)
    trainer = Trainer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    history = []
    for _ in range(cfg.steps):
        idx = torch.randint(0, x.shape[0], (cfg.batch_size,), generator=gen)
        xb, yb = rotate_flip(x[idx], y[idx], gen)
        record = trainer.train_step(xb, yb, gen)
        if not record["skipped"]:
            history.append(record)
    trainer.model.eval()
    return trainer, history


def conv_output_dtypes(predictor, image) -> set[torch.dtype]:
    """The dtypes of every convolution's output while ``predictor`` predicts ``image``
    (``[H, W]``): what precision its networks really run in."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in predictor.model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        predictor.predict(image, samples=2, steps=3)
    finally:
        for h in hooks:
            h.remove()
    return seen
