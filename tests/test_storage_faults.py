"""A full disk leaves no partial file and keeps what was there; checkpoints and model
folders from another version or damaged in transit are refused in one sentence."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from helpers import tiny_config, tiny_model_config

import microdiff.checkpoint as checkpoint
import microdiff.data.io as io
from microdiff.checkpoint import (
    BundleError,
    CheckpointError,
    latest_checkpoint,
    load_bundle,
    load_training_state,
    save_bundle,
    save_training_state,
)
from microdiff.config import SampleConfig
from microdiff.data.io import Image, ImageWriteError, read_image, write_image
from microdiff.diffusion import CVDM
from microdiff.errors import ConfigError
from microdiff.runs import train_run


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("suffix", [".tif", ".mrc"])
def test_a_full_disk_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch, suffix) -> None:
    path = tmp_path / f"out{suffix}"
    old = Image(np.zeros((8, 8), np.float32), "YX", 0.1)
    write_image(path, old)
    before = path.read_bytes()
    monkeypatch.setattr(io.os, "fsync", disk_full)  # TIFF: fails while flushing
    monkeypatch.setattr(io.os, "replace", disk_full)  # MRC: fails at the rename
    with pytest.raises(ImageWriteError, match="No space left on device"):
        write_image(path, Image(np.ones((8, 8), np.float32), "YX", 0.1), overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(path).data, old.data)


def test_a_full_disk_keeps_the_previous_model_folder_whole(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    cfg = tiny_model_config()
    model = CVDM.from_config(cfg)
    folder = save_bundle(tmp_path / "model", model, cfg, SampleConfig(), scale=2)
    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(BundleError, match="No space left on device"):
        save_bundle(folder, model, cfg, SampleConfig(), scale=2, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    load_bundle(folder)  # still loads


def test_damaged_weights_are_refused_in_one_sentence(tmp_path) -> None:
    cfg = tiny_model_config()
    folder = save_bundle(tmp_path / "model", CVDM.from_config(cfg), cfg, SampleConfig(), scale=2)
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BundleError, match="weights.safetensors: not readable"):
        load_bundle(folder)


def test_a_checkpoint_of_another_format_is_refused(tmp_path) -> None:
    path = save_training_state(tmp_path, {"model": {}, "step": 3}, step=3)
    assert load_training_state(path)["checkpoint_format"] == checkpoint.CHECKPOINT_FORMAT
    state = torch.load(path, weights_only=False) | {"checkpoint_format": 99, "microdiff_version": "9.0"}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="format 99 .microdiff 9.0.*start a new run"):
        load_training_state(path)


def test_resuming_a_run_whose_config_this_version_does_not_know_is_refused(tmp_path) -> None:
    cfg = tiny_config(steps=2)
    train_run(cfg, tmp_path / "run", progress=False)
    path = latest_checkpoint(tmp_path / "run" / "checkpoints")
    state = torch.load(path, weights_only=False)
    state["config"]["train"]["future_option"] = 1
    torch.save(state, path)
    cfg.train.steps = 4
    with pytest.raises(ConfigError, match="does not fit this microdiff version"):
        train_run(cfg, tmp_path / "run", resume=True, progress=False)
