"""Faults during training: SIGKILL at a random step resumes to the same weights; SIGTERM and
SIGINT save a checkpoint and stop with one sentence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config

from microdiff.checkpoint import latest_checkpoint, load_training_state
from microdiff.config import config_to_yaml
from microdiff.runs import train_run

STEPS = 60


def start_training(cfg_path: Path, out: Path) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([sys.executable, "-m", "microdiff", "train", "--config", str(cfg_path),
                             "--out", str(out), "--quiet"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 120) -> int:
    """Poll ``stats.jsonl`` until training logged ``step``; returns the last logged step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = out / "stats.jsonl"
        if stats.exists():
            lines = [ln for ln in stats.read_text().splitlines() if ln.strip()]
            steps = [json.loads(ln)["step"] for ln in lines[:-1]]  # the last may be half-written
            if steps and steps[-1] >= step:
                return steps[-1]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    raise AssertionError(f"training did not reach step {step} in {timeout} s")


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    state = load_training_state(latest_checkpoint(run / "checkpoints"), "cpu")
    assert state["step"] == STEPS
    return {f"{part}.{k}": v for part in ("model", "ema") for k, v in state[part].items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)  # as the subprocess: the same kernels, bit-identical steps
    root = tmp_path_factory.mktemp("faults")
    cfg = tiny_config(steps=STEPS)
    cfg.train.checkpoint_every, cfg.train.val_every, cfg.train.log_every = 4, 0, 1
    (root / "cfg.yaml").write_text(config_to_yaml(cfg))
    train_run(cfg, root / "straight", progress=False)
    return root, cfg, final_weights(root / "straight")


@pytest.mark.parametrize("repetition", range(3))
def test_sigkill_at_a_random_step_resumes_to_the_same_weights(setup, repetition) -> None:
    root, cfg, reference = setup
    out = root / f"killed{repetition}"
    # from step 5 on: step 4 is checkpointed before step 5 is logged
    kill_at = int(np.random.default_rng(repetition).integers(5, STEPS // 2))
    proc = start_training(root / "cfg.yaml", out)
    reached = wait_for_step(proc, out, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = load_training_state(latest_checkpoint(out / "checkpoints"), "cpu")["step"]
    assert 0 < saved <= reached + 4 and saved < STEPS  # killed mid-run, after a checkpoint
    with open(out / "stats.jsonl", "a") as fh:  # as if killed in the middle of a log line
        fh.write('{"step": 99, "kind": "tr')
    train_run(cfg, out, resume=True, progress=False)
    resumed = final_weights(out)
    for name, value in reference.items():
        assert torch.equal(resumed[name], value), name
    logged = [json.loads(ln)["step"] for ln in (out / "stats.jsonl").read_text().splitlines()]
    assert logged == sorted(logged) and logged[-1] == STEPS  # the torn line is gone


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_a_checkpoint_and_say_how_to_resume(setup, sig) -> None:
    root, cfg, reference = setup
    out = root / f"stopped-{sig.name}"
    proc = start_training(root / "cfg.yaml", out)
    wait_for_step(proc, out, 5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"error: stopped by {sig.name} at step ") and "--resume" in err
    stopped_at = int(err.split(" at step ")[1].split(";")[0])
    state = load_training_state(latest_checkpoint(out / "checkpoints"), "cpu")
    assert state["step"] == stopped_at  # the step in progress was saved, not an older one
    train_run(cfg, out, resume=True, progress=False)
    resumed = final_weights(out)
    for name, value in reference.items():
        assert torch.equal(resumed[name], value), name
