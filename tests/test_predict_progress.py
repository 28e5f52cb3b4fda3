"""Progress over whole stacks (issue 20, item 3): ``microdiff predict`` shows a bar over the
current file's network calls, every plane of a stack included, so the time left is known."""

from __future__ import annotations

import numpy as np
from helpers import tiny_model_config

from microdiff.checkpoint import save_bundle
from microdiff.config import SampleConfig
from microdiff.data.io import Image, write_image
from microdiff.diffusion import CVDM
from microdiff.predict_files import network_bar, predict_files
from microdiff.predictor import load, predict_planes


def _bundle(folder, steps: int = 3):
    cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
    return save_bundle(folder, CVDM.from_config(cfg), cfg, SampleConfig(steps=steps, samples=2), scale=2)


def test_a_stack_reports_every_plane_step_against_one_total(tmp_path) -> None:
    pred = load(_bundle(tmp_path / "model"))
    planes = np.random.default_rng(0).uniform(0, 500, (3, 16, 16)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    predict_planes(pred, planes, progress=lambda d, t: calls.append((d, t)), tile=16, overlap=4)
    # 32² output in 16² tiles with overlap 4: 3 × 3 tiles, 3 steps each, 3 planes
    total = 3 * 9 * 3
    assert [d for d, _ in calls] == list(range(1, total + 1))
    assert {t for _, t in calls} == {total}


def test_the_bar_reaches_the_stack_total(tmp_path, capsys) -> None:
    model = _bundle(tmp_path / "model", steps=4)
    stack = np.random.default_rng(1).uniform(0, 500, (2, 16, 16)).astype(np.float32)
    write_image(tmp_path / "in" / "z.tif", Image(stack, "ZYX", 0.0626))
    predict_files(model, [tmp_path / "in"], tmp_path / "out", stack="slices", progress=True)
    err = capsys.readouterr().err
    assert "z.tif (2 planes)" in err and "8/8" in err  # one 32² tile, 4 steps, 2 planes


def test_no_bar_when_progress_is_off() -> None:
    with network_bar("a.tif", "YX", 1, enabled=False) as on_progress:
        assert on_progress is None
