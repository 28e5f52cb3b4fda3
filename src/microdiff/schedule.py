"""Noise schedules γ(t, x): learned (per pixel, conditioned on x) and fixed.

Every schedule here has the separable form of METHOD.md

    γ(t, x) = exp(−λ(x) · ρ(t)),      β(t, x) = λ(x) · τ(t),

so one interface covers them all:

- ``lam(x)``  → λ map ``[B, C, H, W]`` (a learned U-Net) or ones ``[B, C, 1, 1]`` (fixed);
  compute it once per batch and reuse it for every t.
- ``rho(t)``  → ρ(t) ``[B]``, the integrated rate (−log γ per unit λ).
- ``tau(t)``  → τ(t) ``[B]``, the rate; ``learned`` has its own network for it
  (the authors' parameterisation: ρ ≈ ∫τ only through the loss), the others use ρ′ exactly.

Time derivatives of γ are taken by autograd through ρ (each ρ(t_b) depends only on t_b,
so the gradient of ``ρ.sum()`` is the per-example derivative) and the chain rule
through ``exp(−λρ)``. All schedule math runs in float32 (or float64), never under autocast.
"""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nets.time import LAMBDA0, ExactIntegralTimeNet, MonotoneTimeNet, reference_rho, reference_tau
from .nets.unet import UNet, UNetSpec
from .options import GRIDS, SCHEDULE_KINDS, choose

GAMMA_MIN = 1e-6  # floor on γ (the authors clip to [1e-6, 0.99999])
GAMMA_MAX = 1.0 - 1e-5



def _full_precision(v: Tensor) -> Tensor:
    """float16/bfloat16 → float32 (schedule math never runs in half precision)."""
    return v.float() if v.dtype in (torch.float16, torch.bfloat16) else v


def working_dtype(v: Tensor) -> torch.dtype:
    """float64 for float64 inputs, else float32: the precision of all diffusion math."""
    return torch.float64 if v.dtype == torch.float64 else torch.float32


def full_precision_math(fn):
    """Run ``fn`` with autocast disabled, so its matmuls stay in float32 (or float64)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def _as_batch_times(t: Tensor | float, x: Tensor) -> Tensor:
    """Return t as a tensor of shape [B] in x's precision (at least float32)."""
    batch = x.shape[0]
    t = torch.as_tensor(t, dtype=working_dtype(x), device=x.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape [{batch}], got {tuple(t.shape)}")
    return t


@dataclass
class GammaDerivatives:
    """γ and its first two time derivatives, each ``[B, C, H, W]``."""

    gamma: Tensor
    dgamma_dt: Tensor
    d2gamma_dt2: Tensor


class Schedule(nn.Module, abc.ABC):
    """Base class: γ(t, x) = clamp(exp(−λ(x) ρ(t)), GAMMA_MIN, GAMMA_MAX)."""

    out_channels: int
    #: True when τ = ρ′ holds by construction (then ∂γ/∂t = −βγ identically).
    rate_is_exact: bool = True
    #: True when λ(x) comes from a network (one call per image when sampling).
    uses_network: bool = False

    # --- the three parts every schedule defines -------------------------------------
    @abc.abstractmethod
    def lam(self, x: Tensor) -> Tensor:
        """λ(x) ≥ 0: ``[B, C_out, H, W]`` or broadcastable ``[B, C_out, 1, 1]``."""

    @abc.abstractmethod
    def rho(self, t: Tensor) -> Tensor:
        """ρ(t): ``[B]`` → ``[B]``, non-negative and (for a valid schedule) increasing."""

    def tau(self, t: Tensor) -> Tensor:
        """τ(t): ``[B]`` → ``[B]``, the rate with β = λ τ; ρ′(t) unless overridden."""
        return self.rho_derivatives(t)[1]

    # --- derived quantities -----------------------------------------------------------
    @full_precision_math
    def rho_derivatives(self, t: Tensor, order: int = 1) -> tuple[Tensor, ...]:
        """(ρ, ρ′[, ρ″]) at times t ``[B]`` by autograd; differentiable w.r.t. parameters."""
        with torch.enable_grad():
            t = _full_precision(t.detach()).requires_grad_(True)
            rho = self.rho(t)
            outs = [rho]
            d = rho
            for _ in range(order):
                (d,) = torch.autograd.grad(d.sum(), t, create_graph=True)
                outs.append(d)
        return tuple(outs)

    @staticmethod
    def _view(v: Tensor) -> Tensor:
        return v.view(-1, 1, 1, 1)

    @full_precision_math
    def log_gamma_at(self, t: Tensor, lam: Tensor) -> Tensor:
        """log γ for times t ``[B]`` and a precomputed λ map (unclamped)."""
        return -lam * self._view(self.rho(t))

    @full_precision_math
    def gamma_at(self, t: Tensor, lam: Tensor) -> Tensor:
        """γ ``[B, C, H, W]`` for times t ``[B]`` and a precomputed λ map."""
        return self.log_gamma_at(t, lam).exp().clamp(GAMMA_MIN, GAMMA_MAX)

    @full_precision_math
    def beta_at(self, t: Tensor, lam: Tensor) -> Tensor:
        """β = λ τ(t) ``[B, C, H, W]`` for times t ``[B]`` and a precomputed λ map."""
        return lam * self._view(self.tau(t))

    @full_precision_math
    def derivatives_at(self, t: Tensor, lam: Tensor) -> GammaDerivatives:
        """γ, ∂γ/∂t, ∂²γ/∂t² (per pixel) for times t ``[B]`` and a λ map.

        With u = λρ(t): ∂γ/∂t = −λρ′γ and ∂²γ/∂t² = (λ²ρ′² − λρ″)γ. Where γ is clamped
        its derivatives are zero, as autograd would give through the clamp.
        """
        rho, d1, d2 = (self._view(v) for v in self.rho_derivatives(t, order=2))
        raw = torch.exp(-lam * rho)
        inside = ((raw > GAMMA_MIN) & (raw < GAMMA_MAX)).to(raw.dtype)
        gamma = raw.clamp(GAMMA_MIN, GAMMA_MAX)
        dgamma = -lam * d1 * gamma * inside
        d2gamma = (lam.square() * d1.square() - lam * d2) * gamma * inside
        return GammaDerivatives(gamma, dgamma, d2gamma)

    @full_precision_math
    def log_gamma_grid(self, lam: Tensor, steps: int, grid: str = "gamma",
                       gamma_min: float | None = None) -> Tensor:
        """log γ on the sampling grid t_i = i / N, i = 0..N: ``[N + 1, B, C, H, W]`` (or
        broadcastable), for a λ map ``lam`` computed once per image.

        ``gamma``: log γ(t_i, x) from the training schedule.
        ``beta-cumprod``: the authors' discretisation, γ_i = ∏_{j<i} (1 − β(t_j, x) / N),
        each factor clipped to [1e-6, 0.99999].
        Both are clamped to [log GAMMA_MIN, log GAMMA_MAX] and made non-increasing in i
        (γ_s ≥ γ_t for s < t), whatever a faithfully learned, not exactly monotone,
        schedule does: no sampling step can amplify the sample. ``gamma_min`` raises the
        floor: sampling starts at γ ≥ gamma_min (a schedule that has drifted to γ(1) ≈ 1e-5
        makes the first ŷ0 = (y − √(1−γ) ε̂)/√γ amplify ε̂'s errors ~300×).
        """
        if steps < 1:
            raise ValueError("steps must be at least 1")
        if gamma_min is not None and not 0 < gamma_min < GAMMA_MAX:
            raise ValueError(f"gamma_min must lie in (0, {GAMMA_MAX}), got {gamma_min}")
        choose(grid, GRIDS, "grid")
        t = torch.linspace(0.0, 1.0, steps + 1, device=lam.device)
        t = t.to(working_dtype(lam))
        if grid == "gamma":
            rho = self.rho(t)
            log_g = -lam.unsqueeze(0) * rho.view(-1, 1, 1, 1, 1)
        else:
            tau = self.tau(t[:-1])
            beta = lam.unsqueeze(0) * tau.view(-1, 1, 1, 1, 1)
            log_alpha = torch.log((1.0 - beta / steps).clamp(1e-6, 0.99999))
            zero = torch.zeros_like(log_alpha[:1])
            log_g = torch.cat([zero, torch.cumsum(log_alpha, dim=0)], dim=0)
        log_g = log_g.clamp(math.log(max(GAMMA_MIN, gamma_min or 0.0)), math.log(GAMMA_MAX))
        # γ_s ≥ γ_t for s < t: running max from t = 1 back to t = 0.
        return torch.flip(torch.cummax(torch.flip(log_g, [0]), dim=0).values, [0])

    def _expand(self, v: Tensor, x: Tensor) -> Tensor:
        return v.expand(x.shape[0], self.out_channels, x.shape[-2], x.shape[-1])

    # --- public API ---------------------------------------------------------------------
    def gamma(self, t: Tensor | float, x: Tensor) -> Tensor:
        """γ(t, x) ∈ (0, 1): t ``[B]`` or scalar, x ``[B, C_in, H, W]`` → ``[B, C_out, H, W]``."""
        t = _as_batch_times(t, x)
        return self._expand(self.gamma_at(t, self.lam(x)), x)

    def dgamma_dt(self, t: Tensor | float, x: Tensor) -> Tensor:
        """∂γ/∂t per pixel by autograd: ``[B, C_out, H, W]``."""
        t = _as_batch_times(t, x)
        return self._expand(self.derivatives_at(t, self.lam(x)).dgamma_dt, x)


def bounded_lambda(u: Tensor, lo: float, hi: float) -> Tensor:
    """λ = lo + (hi − lo) σ(u + b) ∈ (lo, hi), with b such that λ = ln 2 (the reference
    schedule, like softplus(0)) at u = 0. Needs lo < ln 2 < hi. Shape of ``u``."""
    if not lo < LAMBDA0 < hi:
        raise ValueError(f"lambda bounds must satisfy lo < ln 2 < hi, got [{lo}, {hi}]")
    p = (LAMBDA0 - lo) / (hi - lo)
    return lo + (hi - lo) * torch.sigmoid(u + math.log(p / (1 - p)))


# ----------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------
class LearnedSchedule(Schedule):
    """CVDM's schedule: λ(x) = softplus(U(x)) per pixel, τ and ρ learned time networks.

    ``exact=False`` (kind ``learned``) is faithful to the reference code: τ and ρ are two
    independent :class:`MonotoneTimeNet` and ρ ≈ ∫τ only through L_β.
    ``exact=True`` (kind ``learned-exact``) uses one :class:`ExactIntegralTimeNet` for ρ
    and τ = ρ′, so ∂γ/∂t = −βγ holds identically and γ is non-increasing in t.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        net: UNetSpec,
        exact: bool = False,
        time_hidden: int = 1024,
        exact_components: int = 16,
        lambda_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.exact = exact
        self.lambda_range = lambda_range
        self.rate_is_exact = exact
        self.uses_network = True
        self.unet = UNet(in_channels, out_channels, net, cond_channels=0, zero_init_out=False)
        if exact:
            self.rho_net: nn.Module = ExactIntegralTimeNet(exact_components)
        else:
            self.rho_net = MonotoneTimeNet(time_hidden)
            self.tau_net = MonotoneTimeNet(time_hidden)
            self.rho_net.fit(reference_rho)
            self.tau_net.fit(reference_tau)

    def lam(self, x: Tensor) -> Tensor:
        u = _full_precision(self.unet(x))
        if self.lambda_range is None:
            return F.softplus(u)
        return bounded_lambda(u, *self.lambda_range)

    @full_precision_math
    def rho(self, t: Tensor) -> Tensor:
        return self.rho_net(t.clamp(0.0, 0.99999) if not self.exact else t)

    @full_precision_math
    def tau(self, t: Tensor) -> Tensor:
        if self.exact:
            return self.rho_net.derivative(t)
        return self.tau_net(t.clamp(0.0, 0.99999))


class FixedSchedule(Schedule):
    """Hand-designed, spatially constant schedules for conditional-DDPM baselines.

    ``linear``: DDPM's β from ``beta_start`` to ``beta_end`` over 1000 steps, continuous:
    −log γ(t) = 1000 (β₀ t + ½ (β₁ − β₀) t²).
    ``cosine``: Nichol & Dhariwal, γ(t) = cos²(π/2 · (t' + s)/(1 + s)) / cos²(π/2 · s/(1 + s))
    with t' = 0.9946 t, so that γ(1) ≈ 7e-5 stays finite.
    """

    def __init__(self, kind: str, out_channels: int) -> None:
        super().__init__()
        if kind not in ("linear", "cosine"):
            raise ValueError(f"unknown fixed schedule {kind!r}")
        self.kind = kind
        self.out_channels = out_channels
        self.beta_start, self.beta_end, self.cosine_s, self.cosine_tmax = 1e-4, 0.02, 8e-3, 0.9946

    def lam(self, x: Tensor) -> Tensor:
        return torch.ones(x.shape[0], self.out_channels, 1, 1, device=x.device, dtype=working_dtype(x))

    @full_precision_math
    def rho(self, t: Tensor) -> Tensor:
        if self.kind == "linear":
            return 1000.0 * (self.beta_start * t + 0.5 * (self.beta_end - self.beta_start) * t**2)
        s = self.cosine_s
        u = (self.cosine_tmax * t + s) / (1 + s) * (math.pi / 2)
        return -2.0 * (torch.log(torch.cos(u)) - math.log(math.cos(s / (1 + s) * math.pi / 2)))


def build_schedule(
    kind: str,
    in_channels: int,
    out_channels: int,
    net: UNetSpec,
    time_hidden: int = 1024,
    exact_components: int = 16,
    lambda_range: tuple[float, float] | None = None,
) -> Schedule:
    """Schedule for ``kind`` ∈ :data:`SCHEDULE_KINDS` (``lambda_range``: learned kinds only)."""
    if kind == "learned":
        return LearnedSchedule(in_channels, out_channels, net, False, time_hidden,
                               lambda_range=lambda_range)
    if kind == "learned-exact":
        return LearnedSchedule(in_channels, out_channels, net, True, exact_components=exact_components,
                               lambda_range=lambda_range)
    if kind in ("fixed-linear", "fixed-cosine"):
        return FixedSchedule(kind.removeprefix("fixed-"), out_channels)
    raise ValueError(f"unknown schedule kind {kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
