"""Phase ground truth and simulated QPI pairs, and `microdiff simulate --task qpi-*` (issue 6)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from microdiff.data import phase
from microdiff.data.io import read_image
from microdiff.data.phase_truth import (
    NATURAL_IMAGES,
    QPIConfig,
    cell_phase,
    folder_phase_maps,
    natural_image,
    phase_map,
    simulate_qpi,
)


@pytest.mark.parametrize("source", ["natural", "structures", "cells"])
def test_phase_maps_span_the_phase_range_and_are_seeded(source) -> None:
    a, info = phase_map(source, 48, np.random.default_rng(3), phase_range=2.0)
    b, _ = phase_map(source, 48, np.random.default_rng(3), phase_range=2.0)
    c, _ = phase_map(source, 48, np.random.default_rng(4), phase_range=2.0)
    assert a.shape == (48, 48) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() == pytest.approx(0.0) and a.max() == pytest.approx(2.0)
    assert info["source"].startswith(source)


def test_cell_phantoms_are_smooth_bodies_on_a_flat_background() -> None:
    """The property natural crops lack and QPI's objects have: the field's border carries no
    phase, the cells cover a sizeable area, and the phase lives in the low frequencies."""
    for seed in range(6):
        phi, _ = phase_map("cells", 128, np.random.default_rng([9, seed]), phase_range=3.5)
        border = np.concatenate([phi[:3].ravel(), phi[-3:].ravel(), phi[:, :3].ravel(), phi[:, -3:].ravel()])
        assert np.abs(border).max() < 0.02 * 3.5
        assert 0.01 < np.mean(phi > 0.05 * 3.5) < 0.9  # one small cell to several large ones
        power = np.abs(np.fft.fft2(phi - phi.mean())) ** 2
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij"))
        assert power[f < 0.05].sum() > 0.8 * power.sum()  # within 1/20 of the sampling rate
    drawn = {phase_map("natural+cells", 32, np.random.default_rng(i))[1]["source"].split(":")[0]
             for i in range(12)}
    assert drawn == {"natural", "cells"}


def test_every_natural_image_ships_with_scikit_image_and_cell_is_held_out() -> None:
    for name in NATURAL_IMAGES:
        img = natural_image(name)
        assert img.ndim == 2 and img.min() == 0.0 and img.max() == 1.0
    assert "cell" not in NATURAL_IMAGES
    phi = cell_phase(3.5, size=128)
    assert phi.shape == (128, 128) and phi.max() == pytest.approx(3.5) and phi.min() == 0.0


def test_folder_phase_maps(tmp_path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.arange(64, dtype=np.uint16).reshape(8, 8))
    maps = folder_phase_maps(tmp_path, phase_range=1.5)
    assert [n for n, _ in maps] == ["a"] and maps[0][1].max() == pytest.approx(1.5)


@pytest.mark.parametrize("task,channels", [("qpi-2shot", 2), ("qpi-poly", 3)])
def test_simulated_acquisition_is_normalised_and_follows_the_physics(task, channels) -> None:
    phi, _ = phase_map("natural", 64, np.random.default_rng(0))
    cfg = QPIConfig(task=task, noise=(0.0, 0.0), n_wavelengths=8)
    stack, info = simulate_qpi(phi, cfg, np.random.default_rng(1))
    assert stack.shape == (channels, 64, 64) and stack.dtype == np.float32
    assert stack.min() == pytest.approx(0.0) and stack.max() == pytest.approx(1.0)
    if task == "qpi-2shot":  # noise-free: the min-max normalised forward model
        clean = phase.two_shot(torch.from_numpy(phi))[None]
        np.testing.assert_allclose(stack, phase.minmax(clean)[0].numpy(), atol=1e-6)
    else:
        assert len(info["defocus_um"]) == 3 and all(0.01 <= z <= 3 for z in info["defocus_um"])


def test_simulate_qpi_command(tmp_path) -> None:
    out = tmp_path / "qpi"
    cmd = [sys.executable, "-m", "microdiff.cli", "simulate", "--task", "qpi-2shot", "--out", str(out),
           "--n", "2", "--size", "32", "--seed", "5", "--phase-range", "2.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    inp = read_image(out / "input" / "qpi-2shot_00001.tif")
    tgt = read_image(out / "target" / "qpi-2shot_00001.tif")
    assert inp.data.shape == (2, 32, 32) and tgt.data.shape == (32, 32)
    assert inp.pixel_size == pytest.approx(0.21) and tgt.pixel_size == pytest.approx(0.21)
    assert float(tgt.data.max()) == pytest.approx(2.5, rel=1e-6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "qpi-2shot" and len(manifest["pairs"]) == 2
    assert manifest["input"] == "minmax"
    from microdiff.data.simulate_files import write_qpi_pairs

    write_qpi_pairs(tmp_path / "raw", "qpi-2shot", 2, 32, seed=5, phase_range=2.5, raw=True, progress=False)
    raw = read_image(tmp_path / "raw" / "input" / "qpi-2shot_00001.tif").data
    assert raw.min() > 0 and abs(float(raw.mean()) - 1.0) < 0.5  # intensities at unit illumination
    np.testing.assert_allclose((raw - raw.min()) / (raw.max() - raw.min()), inp.data, atol=1e-5)
    bad = subprocess.run([*cmd[:5], "qpi-3shot", *cmd[6:]], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--task" in bad.stderr
