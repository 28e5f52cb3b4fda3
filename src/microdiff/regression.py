"""The regression baseline (CARE/DFCAN-like): one U-Net trained with MSE or L1.

The same U-Net class, data, residual target and target scale as the CVDM, so that a
comparison changes one thing: the network maps the condition ``x`` straight to the
target instead of learning to denoise. It has the CVDM's training and sampling
interface (:class:`microdiff.models.ImageModel`), so
``microdiff train``, ``predict``, ``evaluate`` and ``demo`` take it with
``model.kind=regression``; ``sample`` returns the one prediction with a zero std
(a regression network gives no uncertainty).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .diffusion import residual_base
from .nets.unet import UNet
from .options import REGRESSION_LOSSES, choose
from .sampling import SampleOutput


class RegressionModel(nn.Module):
    """``y ≈ base(x) + scale · net(x)``; ``loss_kind``: ``mse`` or ``l1``."""

    generative = False

    def __init__(self, net: UNet, out_channels: int, residual: bool = True, target_scale: float = 1.0,
                 loss_kind: str = "mse") -> None:
        super().__init__()
        self.net, self.residual, self.scale = net, residual, target_scale
        self.loss_kind = choose(loss_kind, REGRESSION_LOSSES, "regression loss")
        self.out_channels = out_channels

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> RegressionModel:
        net = UNet(cfg.in_channels, cfg.out_channels, cfg.denoiser)
        return cls(net, cfg.out_channels, cfg.residual, cfg.target_scale, cfg.regression_loss)

    @property
    def main_network(self) -> nn.Module:
        return self.net

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.parameters())}]

    def clip_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]

    def forward(self, x: Tensor) -> Tensor:
        """The prediction ``[B, C_out, H, W]`` for the condition ``x`` ``[B, C_in, H, W]``."""
        out = self.scale * self.net(x)
        return out + residual_base(x, out.shape[1]) if self.residual else out

    def draw_noise(self, shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> None:
        """Regression draws nothing (the CVDM's interface)."""
        return None

    def loss(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None,
             noise: None = None) -> dict[str, Tensor]:
        """``{"mse"|"l1": Tensor[B]}``: the per-example mean over pixels, in units of the
        target scale (so its size is comparable to the CVDM's ``eps`` term); ``generator``
        and ``noise`` are ignored (the CVDM's interface)."""
        if x.shape[0] != y.shape[0] or x.shape[-2:] != y.shape[-2:]:
            raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must share B, H and W")
        diff = (self(x) - y) / self.scale
        per_pixel = diff.square() if self.loss_kind == "mse" else diff.abs()
        return {self.loss_kind: per_pixel.float().flatten(1).mean(1)}

    def total_loss(self, terms: dict[str, Tensor]) -> Tensor:
        return sum(v.mean() for v in terms.values())

    @torch.no_grad()
    def sample(self, x: Tensor, steps: int = 1, samples: int = 1, generator: torch.Generator | None = None,
               eta: float = 1.0, grid: str = "gamma", clip: float | None = None,
               progress: bool = False, on_step: Callable[[], None] | None = None,
               point_estimate: str = "sample-mean", gamma_min: float | None = None,
               uncertainty: str = "samples") -> SampleOutput:
        """The CVDM's sampling interface: the prediction as mean and as each of the
        ``samples`` identical samples, std zero, one network call (``steps``, ``eta``,
        ``grid``, ``clip``, ``point_estimate``, ``gamma_min`` and ``uncertainty`` do not apply)."""
        mean = self(x)
        if on_step is not None:
            on_step()
        return SampleOutput(mean, torch.zeros_like(mean), mean[:, None].expand(-1, samples, -1, -1, -1),
                            torch.ones_like(mean), network_calls=1, sample_mean=mean)

