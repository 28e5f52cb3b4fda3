"""The training workflow: run folder, exact resume, non-finite guard, data sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_config, tiny_model

import microdiff
from microdiff.checkpoint import latest_checkpoint, load_training_state
from microdiff.config import Config, TrainConfig
from microdiff.data.simulate_files import write_simulated_pairs
from microdiff.data.sources import TrainingData, load_training_data
from microdiff.errors import ConfigError, UserError
from microdiff.runs import train_run
from microdiff.train import MAX_BAD_STEPS, Trainer, TrainingDiverged


def _weights(run) -> dict[str, torch.Tensor]:
    return {"model": run.trainer.model.state_dict(), "ema": run.trainer.ema.state_dict()}


def test_resumed_run_matches_an_uninterrupted_one(tmp_path) -> None:
    straight = train_run(tiny_config(steps=20), tmp_path / "a", progress=False)
    train_run(tiny_config(steps=10), tmp_path / "b", progress=False)  # stops at 10
    resumed = train_run(tiny_config(steps=20), tmp_path / "b", resume=True, progress=False)
    for part in ("model", "ema"):
        a, b = _weights(straight)[part], _weights(resumed)[part]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{part}.{k} differs after resume"
    sa = load_training_state(latest_checkpoint(tmp_path / "a" / "checkpoints"))
    sb = load_training_state(latest_checkpoint(tmp_path / "b" / "checkpoints"))
    assert sa["step"] == sb["step"] == 20
    opt_a, opt_b = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)
    train_a = [json.loads(ln) for ln in (tmp_path / "a" / "stats.jsonl").read_text().splitlines()]
    train_b = [json.loads(ln) for ln in (tmp_path / "b" / "stats.jsonl").read_text().splitlines()]
    loss_a = [r["loss"] for r in train_a if r["kind"] == "train"]
    loss_b = [r["loss"] for r in train_b if r["kind"] == "train"]
    assert loss_a == loss_b and len(loss_a) == 20


def test_run_folder_holds_config_stats_checkpoints_montages_and_bundle(tmp_path) -> None:
    cfg = tiny_config(steps=12)
    run = train_run(cfg, tmp_path / "run", progress=False)
    out = run.folder
    saved = Config.model_validate(yaml.safe_load((out / "config.yaml").read_text()))
    assert saved == cfg
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000010.pt", "step_00000012.pt"]  # keep_checkpoints = 2
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000012.pt"
    records = [json.loads(ln) for ln in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 13))
    vals = [r for r in records if r["kind"] == "validation"]
    assert [r["step"] for r in vals] == [5, 10, 12] and all(np.isfinite(r["val_psnr"]) for r in vals)
    assert sorted(p.name for p in (out / "montages").iterdir()) == [
        "step_00000005.png", "step_00000010.png", "step_00000012.png"]
    meta = json.loads((out / "model" / "bundle.json").read_text())
    assert meta["weights"] == "ema" and meta["scale"] == 2
    assert meta["pixel_size_um"] == pytest.approx(0.0626)  # the simulator's widefield pixel
    bundle = microdiff.load(out / "model").model.state_dict()
    for k, v in run.trainer.ema.state_dict().items():
        assert torch.equal(bundle[k], v)
    assert not list(out.rglob("*.tmp"))


def test_folder_rules(tmp_path) -> None:
    with pytest.raises(UserError, match="no checkpoint"):
        train_run(tiny_config(), tmp_path / "new", resume=True, progress=False)
    train_run(tiny_config(steps=2), tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="not empty"):
        train_run(tiny_config(steps=2), tmp_path / "run", progress=False)
    changed = tiny_config(steps=4)
    changed.model.timesteps = 100
    with pytest.raises(ConfigError, match="model section differs"):
        train_run(changed, tmp_path / "run", resume=True, progress=False)
    done = train_run(tiny_config(steps=2), tmp_path / "run", resume=True, progress=False)
    assert done.trainer.step == 2  # already there: nothing trained, outputs refreshed


def test_non_finite_losses_are_skipped_then_stop_with_the_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    good = TrainingData.batch

    def poisoned(self, step, cfg, batch_size, seed):
        x, y = good(self, step, cfg, batch_size, seed)
        return (x * float("nan"), y) if step >= 5 else (x, y)

    monkeypatch.setattr(TrainingData, "batch", poisoned)
    cfg = tiny_config(steps=40)
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint \(step 5\)"):
        train_run(cfg, tmp_path / "run", progress=False)
    state = load_training_state(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert state["step"] == 5
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_trainer_skips_a_bad_batch_without_touching_the_weights() -> None:
    model = tiny_model("learned", residual=True)
    trainer = Trainer(model, TrainConfig(warmup=0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.full((2, 1, 16, 16), float("nan"))
    for _ in range(MAX_BAD_STEPS - 1):
        assert trainer.train_step(x, x)["skipped"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TrainingDiverged, match="not finite"):
        trainer.train_step(x, x)


def test_warmup_does_not_depend_on_the_total_steps() -> None:
    a = Trainer(tiny_model(), TrainConfig(steps=10, warmup=4))
    b = Trainer(tiny_model(), TrainConfig(steps=10_000, warmup=4))
    assert [a.lr_at(s) for s in range(10)] == [b.lr_at(s) for s in range(10)]
    assert a.lr_at(0) == pytest.approx(a.cfg.lr / 4) and a.lr_at(3) == a.lr_at(9) == a.cfg.lr


def test_adamw_and_bf16_autocast_step() -> None:
    cfg = TrainConfig(optimizer="adamw", weight_decay=0.01, warmup=0)
    trainer = Trainer(tiny_model("learned", residual=True), cfg, autocast_dtype=torch.bfloat16)
    assert isinstance(trainer.opt, torch.optim.AdamW)
    x, y = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    record = trainer.train_step(x, y, torch.Generator().manual_seed(0))
    assert record["skipped"] == 0.0 and np.isfinite(record["loss"])
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def _losses(steps: int = 3, **options) -> list[float]:
    trainer = Trainer(tiny_model("learned", residual=True), TrainConfig(warmup=1, **options))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 16, 16, generator=gen), torch.rand(4, 1, 16, 16, generator=gen)
    return [trainer.train_step(x, y, torch.Generator().manual_seed(s))["loss"] for s in range(steps)]


def test_channels_last_trains_the_same_model() -> None:
    """The CUDA default layout, checked on the CPU: same losses step by step."""
    np.testing.assert_allclose(_losses(channels_last=True), _losses(channels_last=False), rtol=1e-4)


@pytest.mark.slow
def test_compiled_denoiser_trains_the_same_model() -> None:
    np.testing.assert_allclose(_losses(compile=True), _losses(compile=False), rtol=1e-4)


def test_training_from_a_paired_folder_reads_the_pixel_size(tmp_path) -> None:
    write_simulated_pairs(tmp_path / "data", "ccp", 4, 32, level=7, seed=0, progress=False)
    cfg = tiny_config(steps=2)
    cfg.data.path = str(tmp_path / "data")
    data = load_training_data(cfg.data, seed=0, progress=False)
    assert len(data.train) == 3 and len(data.val) == 1 and data.pixel_size_um == pytest.approx(0.0626)
    x, y = data.batch(0, cfg.data, 2, seed=0)
    assert x.shape == y.shape == (2, 1, 16, 16)
    assert torch.equal(x, data.batch(0, cfg.data, 2, seed=0)[0])  # a pure function of (seed, step)
    assert not torch.equal(x, data.batch(1, cfg.data, 2, seed=0)[0])
    train_run(cfg, tmp_path / "run", progress=False)
    cfg.data.size = 64
    with pytest.raises(UserError, match="smaller than the patch size"):
        load_training_data(cfg.data, seed=0, progress=False)


def test_training_pool_never_repeats_simulate_output() -> None:
    cfg = tiny_config().data
    data = load_training_data(cfg, seed=0, progress=False)
    from microdiff.data.datasets import simulated

    files = simulated(cfg.structure, 2, cfg.image_size, seed=0)
    assert not any(torch.equal(f.low, p.low) for f in files for p in data.train + data.val)
