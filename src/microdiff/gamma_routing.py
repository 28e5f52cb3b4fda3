"""How the ε-loss's gradient reaches the learned schedule (``model.schedule.eps_grad``).

:func:`route_gamma` leaves γ's value unchanged and scales, keeps or cuts the gradient that
flows back through it into the schedule; :func:`scale_grad` is the identity with a scaled
gradient it is built on.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``weight``."""

    @staticmethod
    def forward(ctx, value: Tensor, weight: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(weight)
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        (weight,) = ctx.saved_tensors
        return grad * weight, None


def scale_grad(value: Tensor, weight: Tensor) -> Tensor:
    """``value`` unchanged, with its gradient multiplied by ``weight`` (broadcastable)."""
    return _ScaleGrad.apply(value, weight.detach())


def route_gamma(gamma: Tensor, dgamma_dt: Tensor, mode: str) -> Tensor:
    """γ as the ε-loss sees it: the value is unchanged, the gradient reaching the schedule is

    - ``full``: unchanged (the paper: the unweighted ε-loss trains the schedule);
    - ``none``: zero (the schedule learns from L_β, L_prior and L_γ only);
    - ``elbo``: multiplied per pixel by w = −d log SNR/dt = −(∂γ/∂t) / (γ (1 − γ)), the
      weight that turns the ε-loss into the continuous-time ELBO (VDM), divided by its batch
      mean so the step size stays comparable. The loss at a pixel depends on γ nearby, so
      this weights the gradient at each pixel's γ rather than each pixel's loss: exact for
      a spatially constant schedule, an approximation where λ(x) varies.

    All ``[B, C, H, W]``.
    """
    if mode == "full":
        return gamma
    if mode == "none":
        return gamma.detach()
    w = (-dgamma_dt / (gamma * (1 - gamma))).detach().clamp_min(0)
    return scale_grad(gamma, w / w.mean().clamp_min(1e-12))
