"""The CUDA paths, on a GPU: bf16 autocast, fused Adam, channels-last, ``torch.compile``,
NCCL and prediction. Skipped where no GPU is visible (CI); run on a lent GPU with
``python -m pytest tests/test_cuda.py`` (see benchmarks/gpu_check.sh)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from helpers import conv_output_dtypes, tiny_config, tiny_model

from microdiff.config import TrainConfig
from microdiff.distributed import World
from microdiff.predictor import load
from microdiff.runs import train_run
from microdiff.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trainer(world: World | None = None, **options) -> Trainer:
    return Trainer(tiny_model("learned", residual=True), TrainConfig(warmup=1, **options), "cuda",
                   world=world)


def _losses(steps: int = 3, world: World | None = None, **options) -> list[float]:
    """Losses of ``steps`` updates on one fixed batch, noise from CUDA generators seeded 0, 1, …"""
    trainer = _trainer(world, **options)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 16, 16, generator=gen), torch.rand(4, 1, 16, 16, generator=gen)
    return [trainer.train_step(x, y, torch.Generator("cuda").manual_seed(s))["loss"] for s in range(steps)]


def test_cuda_defaults_are_fused_adam_channels_last_and_bf16_convolutions() -> None:
    trainer = _trainer()
    assert trainer.opt.param_groups[0]["fused"] is True
    assert trainer.autocast_dtype == torch.bfloat16
    convs = [m for m in trainer.model.main_network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    dtypes: list[torch.dtype] = []
    hook = convs[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    x = torch.rand(4, 1, 16, 16)
    record = trainer.train_step(x, x.flip(-1), torch.Generator("cuda").manual_seed(0))
    hook.remove()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)  # the network ran in bf16
    assert record["skipped"] == 0.0 and np.isfinite(record["loss"])  # the schedule math stayed finite


def test_bf16_training_follows_float32_training() -> None:
    """Same noise, same batch: bf16 autocast changes the losses by rounding only."""
    np.testing.assert_allclose(_losses(5, bf16=True), _losses(5, bf16=False), rtol=3e-2)


def test_cuda_loss_equals_cpu_loss_in_float32() -> None:
    """The loss terms of one model on fixed inputs and noise, CPU against GPU (TF32 off)."""
    model = tiny_model("learned", residual=True)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 1, 16, 16, generator=gen), torch.rand(4, 1, 16, 16, generator=gen)
    noise = model.draw_noise(y.shape, "cpu", gen)
    cpu = {k: v.detach().numpy() for k, v in model.loss(x, y, noise=noise).items()}
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        gpu = model.cuda().loss(x.cuda(), y.cuda(), noise=tuple(n.cuda() for n in noise))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    for key, value in cpu.items():
        np.testing.assert_allclose(gpu[key].detach().cpu().numpy(), value, rtol=1e-4, atol=1e-6, err_msg=key)


def test_compiled_denoiser_trains_the_same_model_on_cuda() -> None:
    compiled, eager = _losses(compile=True, bf16=False), _losses(compile=False, bf16=False)
    np.testing.assert_allclose(compiled, eager, rtol=1e-2)


def test_nccl_with_one_process_trains_as_a_plain_process(tmp_path, monkeypatch) -> None:
    """DistributedDataParallel and the loss all-reduce over NCCL, in a world of one process,
    give the losses of the undistributed trainer."""
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.get_backend() == "nccl"
        monkeypatch.setattr(World, "distributed", property(lambda self: True))
        trainer = _trainer(World(0, 1, 0), bf16=False)
        assert isinstance(trainer.objective, torch.nn.parallel.DistributedDataParallel)
        distributed = _losses(3, World(0, 1, 0), bf16=False)
        monkeypatch.undo()
        np.testing.assert_allclose(distributed, _losses(3, bf16=False), rtol=1e-4)
    finally:
        dist.destroy_process_group()


def _trained_on_cuda(tmp_path) -> Path:
    """The model folder of a 3-step run on the GPU whose point estimate is μ(x) (deterministic)."""
    cfg = tiny_config(steps=3)
    cfg.model.zmd.enabled = True
    cfg.sample.point_estimate = "mean-net"
    cfg.train.device = "cuda"
    train_run(cfg, tmp_path / "run", progress=False)
    return tmp_path / "run" / "model"


def test_a_model_trained_on_cuda_predicts_on_cuda_as_on_cpu(tmp_path) -> None:
    """Train on the GPU, then predict with the mean network μ(x) (deterministic) on GPU (bf16)
    and CPU (float32): same image up to bf16 rounding; the std is finite on both."""
    folder = _trained_on_cuda(tmp_path)
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    out = {dev: load(folder, dev).predict(image, samples=2, steps=3) for dev in ("cpu", "cuda")}
    assert out["cuda"].mean.shape == out["cpu"].mean.shape == (32, 32)
    scale = float(np.abs(out["cpu"].mean).max())
    np.testing.assert_allclose(out["cuda"].mean, out["cpu"].mean, atol=2e-2 * scale)
    assert np.isfinite(out["cuda"].std).all() and (out["cuda"].std > 0).any()


def test_no_bf16_runs_the_networks_in_float32_on_cuda(tmp_path) -> None:
    """``bf16=False`` (``predict --no-bf16``): every convolution's output is float32 on the
    GPU; the default: bfloat16."""
    folder = _trained_on_cuda(tmp_path)
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    dtypes = {bf16: conv_output_dtypes(load(folder, "cuda", bf16=bf16), image) for bf16 in (True, False)}
    assert dtypes == {True: {torch.bfloat16}, False: {torch.float32}}
