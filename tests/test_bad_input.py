"""Bad input on the command line: one sentence naming the problem, exit code 2, no
traceback, nothing written. Each case is a row of docs/reliability.md."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tifffile
import torch
from helpers import tiny_config, tiny_model_config

from microdiff import cli
from microdiff.checkpoint import latest_checkpoint, save_bundle
from microdiff.config import SampleConfig
from microdiff.diffusion import CVDM
from microdiff.runs import train_run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    save_bundle(root / "model", CVDM.from_config(cfg), cfg, SampleConfig(steps=2, samples=2), scale=2)
    rng = np.random.default_rng(0)
    good = rng.random((16, 16)).astype(np.float32)

    def folder(name: str) -> None:
        (root / name).mkdir()

    folder("good")
    tifffile.imwrite(root / "good" / "a.tif", good)
    folder("text")
    (root / "text" / "a.tif").write_text("not an image")
    folder("truncated")
    payload = (root / "good" / "a.tif").read_bytes()
    (root / "truncated" / "a.tif").write_bytes(payload[: len(payload) // 2])
    folder("badmrc")
    (root / "badmrc" / "a.mrc").write_bytes(b"\0" * 100)
    folder("empty")
    folder("nan")
    bad = good.copy()
    bad[3, 3], bad[5, 5] = np.nan, np.inf
    tifffile.imwrite(root / "nan" / "a.tif", bad)
    folder("stack")
    tifffile.imwrite(root / "stack" / "a.tif", rng.random((5, 16, 16)).astype(np.float32))
    folder("rgb")
    tifffile.imwrite(root / "rgb" / "a.tif", (rng.random((16, 16, 3)) * 255).astype(np.uint8),
                     photometric="rgb")
    folder("exists")
    (root / "exists" / "a_mean.tif").write_bytes(b"keep me")
    def pairs(name: str, shapes: dict[str, tuple[tuple | None, tuple | None]]) -> None:
        for sub in ("input", "target"):
            (root / name / sub).mkdir(parents=True)
        for stem, (low, high) in shapes.items():
            for sub, shape in (("input", low), ("target", high)):
                if shape:
                    tifffile.imwrite(root / name / sub / f"{stem}.tif", rng.random(shape).astype(np.float32))

    pairs("unpaired", {"a": ((32, 32), None), "b": (None, (64, 64))})
    pairs("mismatch", {"a": ((32, 32), (50, 64)), "b": ((32, 32), (64, 64))})
    pairs("small", {k: ((8, 8), (16, 16)) for k in "abc"})
    pairs("single", {"a": ((32, 32), (64, 64))})
    pairs("multich", {k: (None, (64, 64)) for k in "abc"})
    for k in "abc":
        tifffile.imwrite(root / "multich" / "input" / f"{k}.tif", rng.random((2, 32, 32)).astype(np.float32),
                         imagej=True, metadata={"axes": "CYX"})
    run = root / "badckpt"
    train_run(tiny_config(steps=2), run, progress=False)
    ckpt = latest_checkpoint(run / "checkpoints")
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    (root / "unknown.yaml").write_text("train:\n  stepz: 3\n")
    (root / "range.yaml").write_text("train:\n  lr: -1\n")
    (root / "broken.yaml").write_text("train: [\n")
    return root


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["microdiff", *args])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    return stop.value.code, capsys.readouterr().err


PREDICT = ["predict", "{root}/model"]
CASES = {  # name: (arguments, words the one-line message must contain)
    "missing file": (PREDICT + ["{root}/nothere.tif", "--out", "{out}"], ["nothere.tif", "no such"]),
    "text named .tif": (PREDICT + ["{root}/text", "--out", "{out}"], ["a.tif", "not a readable TIFF"]),
    "truncated TIFF": (PREDICT + ["{root}/truncated", "--out", "{out}"], ["a.tif", "not a readable TIFF"]),
    "corrupt MRC": (PREDICT + ["{root}/badmrc", "--out", "{out}"], ["a.mrc", "not a readable MRC"]),
    "empty folder": (PREDICT + ["{root}/empty", "--out", "{out}"], ["empty", "no images"]),
    "NaN/Inf pixels": (PREDICT + ["{root}/nan", "--out", "{out}"], ["a.tif", "2 of 256", "NaN"]),
    "3-D stack": (PREDICT + ["{root}/stack", "--out", "{out}"], ["a.tif", "ZYX", "--stack slices"]),
    "unknown --stack": (PREDICT + ["{root}/stack", "--out", "{out}", "--stack", "max"],
                        ["--stack", "slices"]),
    "RGB for a 1-channel model": (PREDICT + ["{root}/rgb", "--out", "{out}"],
                                  ["a.tif", "expects 1", "has 3", "RGB"]),
    "not a model folder": (["predict", "{root}/good", "{root}/good", "--out", "{out}"],
                           ["good", "not a microdiff model folder"]),
    "zero samples": (PREDICT + ["{root}/good", "--out", "{out}", "--samples", "0"],
                     ["samples 0", "variance head"]),  # one pass: only for a model with the head
    "negative samples": (PREDICT + ["{root}/good", "--out", "{out}", "--samples", "-1"],
                         ["samples", "at least 0"]),
    "zero steps": (PREDICT + ["{root}/good", "--out", "{out}", "--steps", "0"], ["steps", "at least 1"]),
    "overlap >= tile": (PREDICT + ["{root}/good", "--out", "{out}", "--tile", "32", "--overlap", "40"],
                        ["overlap", "tile"]),
    "output exists": (PREDICT + ["{root}/good", "--out", "{root}/exists"], ["a_mean.tif", "--overwrite"]),
    "unknown config key": (["train", "--config", "{root}/unknown.yaml", "--out", "{out}"],
                           ["unknown.yaml", "train.stepz"]),
    "out-of-range value": (["train", "--config", "{root}/range.yaml", "--out", "{out}"],
                           ["range.yaml", "train.lr", "greater than 0"]),
    "broken YAML": (["train", "--config", "{root}/broken.yaml", "--out", "{out}"], ["broken.yaml", "YAML"]),
    "unknown preset": (["train", "--config", "nope", "--out", "{out}"], ["nope", "presets"]),
    "bad override": (["train", "--out", "{out}", "--set", "train.steps=-3"], ["train.steps"]),
    "unknown device": (PREDICT + ["{root}/good", "--out", "{out}", "--device", "gpu"], ["gpu", "device"]),
    "images without a partner": (["train", "--out", "{out}", "--set", "data.path={root}/unpaired"],
                                 ["unpaired", "without a partner"]),
    "pair not a multiple of the scale": (["train", "--out", "{out}", "--set", "data.path={root}/mismatch"],
                                         ["a", "50x64", "not an integer multiple"]),
    "images smaller than a patch": (["train", "--out", "{out}", "--set", "data.path={root}/small"],
                                    ["small", "smaller than the patch size"]),
    "one image only": (["train", "--out", "{out}", "--set", "data.path={root}/single"],
                       ["single", "at least 2 images"]),
    "2-channel inputs for a 1-channel model": (
        ["train", "--out", "{out}", "--set", "data.path={root}/multich", "--set", "data.size=32"],
        ["multich", "2 channel(s)", "model.in_channels is 1"]),
    "no data folder": (["train", "--out", "{out}", "--set", "data.path={root}/nofolder"],
                       ["nofolder", "not a folder"]),
    "corrupt checkpoint": (["train", "--out", "{root}/badckpt", "--resume"],
                           ["step_00000002.pt", "not a readable microdiff checkpoint"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_sentence_exit_2_and_writes_nothing(case, files, tmp_path, monkeypatch,
                                                             capsys) -> None:
    args, words = CASES[case]
    out = tmp_path / "out"
    code, err = run_cli([a.format(root=files, out=out) for a in args], monkeypatch, capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2, err
    assert "Traceback" not in err and last.startswith("error: "), err
    for word in words:
        assert word in last, f"{word!r} not in {last!r}"
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
    assert (files / "exists" / "a_mean.tif").read_bytes() == b"keep me"


def test_a_constant_image_and_one_smaller_than_a_tile_give_finite_outputs(files, tmp_path, monkeypatch,
                                                                          capsys) -> None:
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "flat.tif", np.full((16, 16), 7, np.uint16))
    tifffile.imwrite(tmp_path / "in" / "tiny.tif", np.random.default_rng(1).random((3, 5), np.float32))
    monkeypatch.setattr(sys, "argv", ["microdiff", "predict", str(files / "model"), str(tmp_path / "in"),
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 0
    for kind in ("mean", "std"):
        assert np.isfinite(tifffile.imread(tmp_path / "out" / f"flat_{kind}.tif")).all()
        tiny = tifffile.imread(tmp_path / "out" / f"tiny_{kind}.tif")
        assert tiny.shape == (6, 10) and np.isfinite(tiny).all()  # 3x5 input, scale 2, tile 256


def test_z_stacks_are_predicted_per_slice_or_as_their_mean(files, tmp_path, monkeypatch, capsys) -> None:
    stack = tifffile.imread(files / "stack" / "a.tif")
    for mode in ("slices", "mean"):
        out = tmp_path / mode
        code, err = run_cli(["predict", str(files / "model"), str(files / "stack"), "--out", str(out),
                             "--stack", mode, "--seed", "2"], monkeypatch, capsys)
        assert code == 0, err
    slices = tifffile.imread(tmp_path / "slices" / "a_mean.tif")
    assert slices.shape == (5, 32, 32) and np.isfinite(slices).all()
    # plane 3 of the stack, alone, gives plane 3 of the per-slice output (same seed)
    tifffile.imwrite(tmp_path / "plane.tif", stack[3])
    code, _ = run_cli(["predict", str(files / "model"), str(tmp_path / "plane.tif"), "--out",
                       str(tmp_path / "one"), "--seed", "2"], monkeypatch, capsys)
    assert code == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "one" / "plane_mean.tif"), slices[3])
    assert tifffile.imread(tmp_path / "mean" / "a_mean.tif").shape == (32, 32)
