"""Device names: auto, cpu, cuda; mistakes are one clear error."""

from __future__ import annotations

import pytest
import torch

from microdiff.devices import resolve_device
from microdiff.errors import UserError


def test_auto_picks_cuda_only_when_there_is_one() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "meta"])
def test_unknown_or_unsupported_devices_are_user_errors(name: str) -> None:
    with pytest.raises(UserError, match="device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device("cuda")
