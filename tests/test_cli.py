"""The command line: the demo end to end (tiny), and user errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import tifffile
from helpers import tiny_config

from microdiff.config import config_to_yaml


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "microdiff.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_demo_runs_end_to_end_on_a_tiny_config(tmp_path) -> None:
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(config_to_yaml(tiny_config()))
    out = tmp_path / "run"
    proc = _run("demo", "--config", str(cfg_path), "--out", str(out), "--quiet", "--set", "train.steps=2")
    assert proc.returncode == 0, proc.stderr
    assert "CVDM posterior mean" in proc.stdout and "bicubic" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    for key in ("psnr_mean", "ssim_mean", "psnr_bicubic", "ssim_bicubic"):
        assert isinstance(results[key], float)
    for key in ("spearman_std_error", "coverage_1sigma"):
        assert isinstance(results[key], float)
    stack = tifffile.imread(out / "examples.tif")
    assert stack.shape == (4, 5, 32, 32)  # one per structure × (input, mean, std, |error|, target)
    for name in ("metrics.csv", "summary.md", "montage.png", "schedule.png", "stats.jsonl"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert all(f"| {s} | cvdm |" in summary for s in ("mt", "factin", "ccp", "er"))
    assert (out / "model" / "bundle.json").exists() and (out / "config.yaml").exists()
    import microdiff

    pred = microdiff.load(out / "model").predict(stack[0, 0][::2, ::2], samples=2, steps=3)
    assert pred.mean.shape == (32, 32) and (pred.std >= 0).all()
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize(("args", "message"), [
    (["demo", "--config", "no-such-preset"], "no config file"),
    (["demo", "--steps", "0"], "--steps"),
])
def test_user_errors_are_one_line_without_traceback(args, message) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_demo_refuses_a_folder_with_other_content(tmp_path) -> None:
    (tmp_path / "precious.tif").write_bytes(b"data")
    proc = _run("demo", "--out", str(tmp_path), "--steps", "1")
    assert proc.returncode == 2 and "does not hold an earlier demo run" in proc.stderr
    assert (tmp_path / "precious.tif").read_bytes() == b"data"


def test_unusable_paths_are_user_errors(tmp_path) -> None:
    proc = _run("demo", "--config", str(tmp_path))  # a folder, not a file
    assert proc.returncode == 2 and "no config file" in proc.stderr
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00model")
    proc = _run("demo", "--config", str(binary))
    assert proc.returncode == 2 and "UTF-8" in proc.stderr
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    proc = _run("demo", "--out", str(a_file), "--steps", "1")
    assert proc.returncode == 2 and "not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_file_is_reported(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: {steps: 3, lern_rate: 1}\n")
    proc = _run("demo", "--config", str(path))
    assert proc.returncode == 2 and "train.lern_rate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_command_writes_mean_and_std_with_pixel_size(tmp_path) -> None:
    import numpy as np
    import torch
    from helpers import tiny_model_config

    from microdiff.checkpoint import save_bundle
    from microdiff.config import SampleConfig
    from microdiff.data.io import Image, read_image, write_image
    from microdiff.diffusion import CVDM

    cfg = tiny_model_config("learned-exact", residual=True)
    torch.manual_seed(0)
    save_bundle(tmp_path / "model", CVDM.from_config(cfg), cfg, SampleConfig(steps=2, samples=2), scale=2)
    rng = np.random.default_rng(0)
    for name in ("a.tif", "b.tif"):
        data = (rng.random((20, 12)) * 500).astype(np.uint16)
        write_image(tmp_path / "in" / name, Image(data, "YX", 0.0626))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "microdiff.cli", "predict", str(tmp_path / "model"),
                           str(tmp_path / "in"), "--out", str(out), "--seed", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("a", "b"):
        mean, std = read_image(out / f"{name}_mean.tif"), read_image(out / f"{name}_std.tif")
        assert mean.data.shape == std.data.shape == (40, 24) and mean.data.dtype == np.float32
        assert mean.pixel_size == pytest.approx(0.0313, rel=1e-5)
    extra = _run("predict", str(tmp_path / "model"), str(tmp_path / "in" / "a.tif"), "--out",
                 str(tmp_path / "extra"), "--samples", "3", "--save-samples", "--save-schedule", "--no-bf16")
    assert extra.returncode == 0, extra.stderr
    samples = read_image(tmp_path / "extra" / "a_samples.tif")
    assert samples.data.shape == (3, 40, 24) and samples.pixel_size == pytest.approx(0.0313, rel=1e-5)
    schedule = read_image(tmp_path / "extra" / "a_schedule.tif").data
    assert schedule.shape == (40, 24) and ((schedule > 0) & (schedule < 1)).all()
    again = _run("predict", str(tmp_path / "model"), str(tmp_path / "in"), "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    missing = _run("predict", str(tmp_path / "model"), str(tmp_path / "nope.tif"), "--out", str(out))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_evaluate_command_writes_metrics_for_model_and_bicubic(tmp_path) -> None:
    import csv

    import torch
    from helpers import tiny_model_config

    from microdiff.checkpoint import save_bundle
    from microdiff.config import SampleConfig
    from microdiff.data.simulate_files import write_simulated_pairs
    from microdiff.diffusion import CVDM

    cfg = tiny_model_config("learned-exact", residual=True)
    torch.manual_seed(0)
    save_bundle(tmp_path / "model", CVDM.from_config(cfg), cfg, SampleConfig(steps=2, samples=3), scale=2)
    write_simulated_pairs(tmp_path / "data", "mt", 2, 48, level=9, seed=0, progress=False)
    proc = _run("evaluate", str(tmp_path / "model"), str(tmp_path / "data"), "--out", str(tmp_path / "ev"))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((tmp_path / "ev" / "metrics.csv").open()))
    assert [(r["image"], r["method"]) for r in rows] == [
        ("mt_00000", "cvdm"), ("mt_00000", "bicubic"), ("mt_00001", "cvdm"), ("mt_00001", "bicubic")]
    for r in rows:
        assert float(r["psnr"]) > 0 and 0 < float(r["ssim"]) <= 1 and r["frc_unit"] == "nm"
        assert (r["coverage_1sigma"] != "") == (r["method"] == "cvdm")
    assert {r["structure"] for r in rows} == {"mt"}  # from manifest.json
    summary = (tmp_path / "ev" / "summary.md").read_text()
    assert "| all | cvdm | 2 |" in summary and "| all | bicubic | 2 |" in summary
    for name in ("montage.png", "schedule.png", "calibration.png", "sparsification.png"):
        assert (tmp_path / "ev" / name).is_file(), name
    bogus = _run("evaluate", str(tmp_path / "model"), str(tmp_path / "data"), "--out", str(tmp_path / "ev2"),
                 "--baseline", "wiener")
    assert bogus.returncode == 2 and "unknown baseline 'wiener'" in bogus.stderr


def test_train_command_runs_resumes_and_reports_errors_in_one_line(tmp_path) -> None:
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(config_to_yaml(tiny_config(steps=4)))
    run = tmp_path / "run"
    proc = _run("train", "--config", str(cfg_path), "--out", str(run), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "validation" in proc.stdout and str(run / "model") in proc.stdout
    again = _run("train", "--config", str(cfg_path), "--out", str(run), "--quiet")
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    more = _run("train", "--out", str(run), "--resume", "--set", "train.steps=6", "--quiet")
    assert more.returncode == 0, more.stderr
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000006.pt"
    bad = _run("train", "--out", str(run), "--resume", "--set", "model.timesteps=50", "--quiet")
    assert bad.returncode == 2 and "only train.* and sample.*" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = _run("train", "--config", str(cfg_path), "--set", f"data.path={tmp_path / 'none'}",
                   "--out", str(tmp_path / "run2"), "--quiet")
    assert missing.returncode == 2 and "not a folder" in missing.stderr
