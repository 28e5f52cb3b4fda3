"""The full demo (minutes): its prediction must beat the bicubic input."""

from __future__ import annotations

import pytest

from microdiff.config import load_config
from microdiff.demo import run_demo


@pytest.mark.slow
def test_demo_posterior_mean_beats_bicubic(tmp_path) -> None:
    summary = run_demo(tmp_path / "demo", load_config("demo"), progress=False)
    assert summary["psnr_mean"] > summary["psnr_bicubic"], summary
    assert summary["ssim_mean"] > summary["ssim_bicubic"], summary
