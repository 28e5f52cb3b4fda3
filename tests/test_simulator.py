"""The BioSR-like simulator: determinism, units, optics, noise, and `microdiff simulate`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from microdiff.data import optics
from microdiff.data.io import read_image
from microdiff.data.synthetic import STRUCTURES, SimulatorConfig, counts_for_level, simulate_pair


@pytest.mark.parametrize("kind", STRUCTURES)
def test_equal_seeds_give_equal_pairs_and_others_differ(kind) -> None:
    a = simulate_pair(kind, 64, np.random.default_rng(1))
    b = simulate_pair(kind, 64, np.random.default_rng(1))
    c = simulate_pair(kind, 64, np.random.default_rng(2))
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.target, b.target)
    assert a.params == b.params
    assert not np.array_equal(a.target, c.target)
    assert a.low.shape == (32, 32) and a.target.shape == a.structure.shape == (64, 64)
    # the target is the structure blurred: about the same intensity (light also blurs in
    # and out across the field's edge), less contrast
    assert a.target.mean() == pytest.approx(a.structure.mean(), rel=0.2)
    assert a.target.std() < a.structure.std()
    assert a.low.dtype == a.target.dtype == np.float32
    assert np.all(a.target >= -1e-3 * a.target.max())  # non-negative up to FFT round-off


def test_levels_set_the_mean_counts() -> None:
    assert counts_for_level(1) == pytest.approx(15) and counts_for_level(9) == pytest.approx(600)
    cfg = SimulatorConfig(haze=(2.0, 2.0), background=(1.0, 1.0))
    for level in (1, 5, 9):
        pair = simulate_pair("er", 128, np.random.default_rng(0), cfg, level=level)
        counts = counts_for_level(level)
        assert pair.low.mean() - cfg.offset == pytest.approx(counts, rel=0.05)
        # target: in-focus photo-electrons, a quarter of all electrons here (1 + 2 + 1)
        assert pair.target.mean() == pytest.approx(counts / cfg.gain / 4, rel=0.05)


def test_noise_is_shot_plus_read_noise() -> None:
    """Pure background: variance = mean photo-electrons + read noise²."""
    rng = np.random.default_rng(0)
    expected = np.full((256, 256), 50.0)
    counts = optics.camera(expected, rng, read_noise=2.0, offset=100.0)
    assert counts.mean() == pytest.approx(150.0, rel=0.01)
    assert counts.var() == pytest.approx(50.0 + 4.0, rel=0.05)


def test_otf_is_one_at_zero_and_zero_beyond_cutoff() -> None:
    k = np.linspace(0, 10, 1001)
    otf = optics.circular_otf(k, cutoff=5.0)
    assert otf[0] == pytest.approx(1.0) and np.all(np.diff(otf) <= 1e-12)
    assert np.all(otf[k >= 5.0] == 0)


def test_widefield_has_no_power_beyond_its_cutoff_and_sim_does() -> None:
    rng = np.random.default_rng(0)
    px, n = 0.0156, 256
    truth = rng.random((n, n))
    k = optics.frequency_radius(n, px)
    cutoff = 2 * 1.4 / 0.525
    wide = np.abs(np.fft.fft2(optics.image_through(truth, px, cutoff))) ** 2
    sim = np.abs(np.fft.fft2(optics.image_through(truth, px, 1.9 * cutoff))) ** 2
    band = (k > 1.1 * cutoff) & (k < 1.6 * cutoff)
    assert wide[band].max() < 1e-12 * wide[0, 0]
    low_band = (k > 0) & (k < 0.5 * cutoff)
    assert sim[band].mean() > 1e-3 * sim[low_band].mean()
    assert optics.image_through(truth, px, cutoff).mean() == pytest.approx(truth.mean())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown structure"):
        simulate_pair("mito", 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="multiple"):
        simulate_pair("mt", 65, np.random.default_rng(0))
    with pytest.raises(ValueError, match="level"):
        counts_for_level(10)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "microdiff.cli", "simulate", *args],
                          capture_output=True, text=True, timeout=300)


def test_simulate_command_writes_a_paired_folder(tmp_path) -> None:
    out = tmp_path / "sim"
    proc = _cli("--out", str(out), "--structure", "ccp", "--n", "2", "--size", "64",
                "--level", "3", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n"] == 2 and manifest["seed"] == 7 and len(manifest["pairs"]) == 2
    name = manifest["pairs"][1]["name"]
    low, target = read_image(out / "input" / name), read_image(out / "target" / name)
    assert low.data.shape == (32, 32) and low.data.dtype == np.uint16
    assert target.data.shape == (64, 64) and target.data.dtype == np.float32
    assert low.pixel_size == pytest.approx(0.0626, rel=1e-5)
    assert target.pixel_size == pytest.approx(0.0313, rel=1e-5)
    again = simulate_pair("ccp", 64, np.random.default_rng([7, 1]), level=3)  # pair 1 alone
    np.testing.assert_array_equal(target.data, again.target)
    # refuses to overwrite; bad values are one line, exit 2
    proc = _cli("--out", str(out), "--n", "1", "--size", "64")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    proc = _cli("--out", str(tmp_path / "x"), "--structure", "mito")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "structure" in proc.stderr


def test_er_edges_from_far_voronoi_vertices_are_clipped() -> None:
    # Regression: training pool image 84 of seed 1 has a Voronoi vertex ~2.5e8 px away,
    # whose edge once needed a 7.5 GiB point list (the benchmark was killed for memory).
    from microdiff.data.datasets import STREAM_TAG
    from microdiff.data.sources import TRAIN_STREAM
    from microdiff.data.structures import _clip_segment

    a, b = np.array([-1e9, 10.0]), np.array([1e9, 20.0])
    p, q = _clip_segment(a, b, -2.0, 65.0)
    assert -2.0 - 1e-6 <= p[0] and q[0] <= 65.0 + 1e-6
    assert abs(p[1] - 15.0) < 1e-3 and abs(q[1] - 15.0) < 1e-3  # on the line, near x = 0
    assert _clip_segment(np.array([-10.0, -10.0]), np.array([-5.0, 100.0]), 0.0, 64.0) is None
    pair = simulate_pair("mixed", 128, np.random.default_rng([1, 84, TRAIN_STREAM, STREAM_TAG]),
                         SimulatorConfig(scale=2))
    assert np.isfinite(pair.target).all() and pair.target.max() > 0


def test_any_draws_a_mixed_image_half_the_time_and_each_single_class_otherwise() -> None:
    """``any`` (single-structure and mixed training images): the first draw picks mixed with
    probability 1/2, else one class uniformly; the image is then exactly that kind's."""
    from microdiff.data.structures import DEFAULT_DENSITY, GENERATORS, structure

    drawn = []
    for seed in range(40):
        got = structure("any", np.random.default_rng(seed), 48, 0.05, 1.0)
        rng = np.random.default_rng(seed)
        if rng.random() < 0.5:
            kind, expected = "mixed", structure("mixed", rng, 48, 0.05, 1.0)
        else:
            kind = str(rng.choice(list(GENERATORS)))
            expected = GENERATORS[kind](rng, 48, 0.05, DEFAULT_DENSITY[kind])
        np.testing.assert_array_equal(got, expected)
        drawn.append(kind)
    assert set(drawn) == {*GENERATORS, "mixed"}
    assert 12 <= drawn.count("mixed") <= 28  # 20 expected; binomial(40, 1/2) sd 3.2
