"""A screenshot of the whole napari window with the widget's output (docs/napari.md).

napari draws with OpenGL, which Qt's offscreen platform does not offer: this test runs
``tests/napari_screenshot.py`` under ``xvfb-run`` and is skipped, with that reason, where
Xvfb is not installed (``apt install xvfb``). ``MICRODIFF_UPDATE_DOCS=1`` writes the image
to docs/img/napari_window.png; ``MICRODIFF_SCREENSHOT_MODEL`` picks a trained model folder
(default: an untrained tiny one, whose output is noise)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

pytest.importorskip("napari", reason="the optional extra microdiff[napari] is not installed")

from helpers import tiny_model_config  # noqa: E402

from microdiff.checkpoint import save_bundle  # noqa: E402
from microdiff.config import SampleConfig  # noqa: E402
from microdiff.diffusion import CVDM  # noqa: E402

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(shutil.which("xvfb-run") is None,
                    reason="no Xvfb: napari's canvas needs OpenGL, which offscreen Qt lacks "
                           "(apt install xvfb)")
def test_napari_window_screenshot(tmp_path) -> None:
    model = os.environ.get("MICRODIFF_SCREENSHOT_MODEL")
    if not model:
        cfg = tiny_model_config("learned", residual=True, target_scale=0.2)
        model = str(save_bundle(tmp_path / "run" / "model", CVDM.from_config(cfg), cfg,
                                SampleConfig(steps=3, samples=2), scale=2, pixel_size_um=0.0626))
    out = (HERE.parent / "docs" / "img" / "napari_window.png" if os.environ.get("MICRODIFF_UPDATE_DOCS")
           else tmp_path / "window.png")
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    done = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable,
                           str(HERE / "napari_screenshot.py"), model, str(out)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    layers = dict(line.split(":", 1) for line in done.stdout.strip().splitlines()[-2].split(";"))
    assert {"widefield (simulated) mean", "widefield (simulated) std"} <= set(layers)
    assert re.search(r"mean and (calibrated std|std \(not calibrated\))", done.stdout), done.stdout[-500:]
    image = iio.imread(out)
    assert image.ndim == 3 and image.shape[0] > 400 and image.std() > 5  # not a blank window
