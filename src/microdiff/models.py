"""The model interface every model kind implements, and :func:`build_model`.

Training, prediction, export and the benchmarks talk to a model only through
:class:`ImageModel`: the loss as named per-example terms and their weighted total, the
loss's random draws, sampling (K posterior samples with their mean and std; one answer and
a zero std for a deterministic model), the output channels, whether it is generative, the
optimiser's parameter groups and the network to compile. Two kinds exist:
:class:`~microdiff.diffusion.CVDM` (``model.kind=cvdm``) and
:class:`~microdiff.regression.RegressionModel` (``model.kind=regression``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .diffusion import CVDM
from .regression import RegressionModel
from .sampling import SampleOutput


@runtime_checkable
class ImageModel(Protocol):
    """What a model kind provides (an ``nn.Module``; shapes ``[B, C, H, W]``, normalised units)."""

    #: True: ``sample`` draws posterior samples whose std is an uncertainty; False: one answer.
    generative: bool

    @property
    def out_channels(self) -> int:
        """Channels of the target ``y``."""

    @property
    def main_network(self) -> nn.Module:
        """The network run at every step (what ``train.compile`` compiles)."""

    def loss(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None,
             noise: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """Named per-example loss terms, each ``Tensor[B]`` (unweighted)."""

    def total_loss(self, terms: dict[str, Tensor]) -> Tensor:
        """The weighted sum of the terms' batch means: a scalar."""

    def draw_noise(self, shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor] | None:
        """The loss's random draws for targets of ``shape`` (None when it draws nothing)."""

    def sample(self, x: Tensor, steps: int = 50, samples: int = 1, generator: torch.Generator | None = None,
               eta: float = 1.0, grid: str = "gamma", clip: float | None = None, progress: bool = False,
               on_step: Callable[[], None] | None = None,
               point_estimate: str = "sample-mean", gamma_min: float | None = None,
               uncertainty: str = "samples") -> SampleOutput:
        """K samples per condition ``x`` with their mean and std (``SampleOutput``)."""

    def parameter_groups(self) -> list[dict]:
        """Optimiser parameter groups (``{"params": [...]}``, optionally ``"lr_scale"``)."""

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """The parameters of each module, clipped separately under ``train.grad_clip_scope=per-module``."""


def build_model(cfg: ModelConfig) -> CVDM | RegressionModel:
    """The model ``cfg.kind`` names, freshly initialised (seed torch first for a fixed init)."""
    return RegressionModel.from_config(cfg) if cfg.kind == "regression" else CVDM.from_config(cfg)
