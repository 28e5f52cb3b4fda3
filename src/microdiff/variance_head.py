"""The variance head (``model.zmd.variance_net``): a one-pass per-pixel std σ(x).

A U-Net on ``[x, μ(x)/mean_scale]`` (inputs detached) that predicts s = log σ² of the
residual ``r = (y − x_res − μ̄(x)) / mean_scale`` per pixel, trained by the Gaussian negative
log-likelihood ½(s + r²·e⁻ˢ), which is minimised at e^s = E[r² | x]: σ(x) then estimates the
RMS error of the mean μ̄ at each pixel (in units of ``mean_scale``; the model converts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .nets.unet import UNet
from .sampling import SampleOutput

#: bound on the predicted log σ² (units of mean_scale²): keeps exp finite
LOG_VAR_BOUND = 30.0


class VarianceHead(UNet):
    """``[B, C_in + C_out, H, W]`` → log σ² ``[B, C_out, H, W]`` (a U-Net; same weights' keys)."""

    def log_var(self, x: Tensor, mu_scaled: Tensor) -> Tensor:
        """log σ² for condition ``x`` ``[B, C_in, H, W]`` and mean ``mu_scaled`` ``[B, C_out, H, W]``
        (μ / mean_scale), both detached; clamped to ±``LOG_VAR_BOUND``."""
        out = self(torch.cat([x.detach(), mu_scaled.detach()], dim=1))
        return out.to(x.dtype).clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND)


def gaussian_nll(log_var: Tensor, r2: Tensor) -> Tensor:
    """½(s + r²·e⁻ˢ) elementwise, s = ``log_var`` and r² = ``r2`` (the constant ½ log 2π left out)."""
    return 0.5 * (log_var + r2 * torch.exp(-log_var))


def one_pass(model: nn.Module, x: Tensor, lam: Tensor, on_step: Callable[[], None] | None) -> SampleOutput:
    """``model.sample(samples=0)`` of a CVDM ``model``: μ(x) and the head's σ(x) without samples, for ``x``
    ``[B, C_in, H, W]`` and the schedule's ``lam`` (for ``gamma_half``); ``on_step`` once."""
    b, c, (h, w) = x.shape[0], model.out_channels, x.shape[-2:]
    mu = model.predict_mean(x)
    point = model.from_diffused(x, torch.zeros_like(mu), mu)
    std = model.predict_std(x, mu)
    gamma_half = model.schedule.gamma_at(torch.full((b,), 0.5, device=x.device), lam)
    if on_step is not None:
        on_step()
    return SampleOutput(point, std, point.new_zeros(b, 0, c, h, w), gamma_half.expand(b, c, h, w),
                        2 + int(model.schedule.uses_network))
