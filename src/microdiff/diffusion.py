"""The CVDM model: forward noising, the loss as named per-example terms, sampling entry.

Notation (METHOD.md): condition ``x`` (already on the target grid), target ``y``,
diffused quantity ``y0`` (``y``, ``y − x`` with the residual target, or
``(y − x_res − sg[μ(x)]) / σ`` with ZMD), ``y_t = sqrt(γ) y0 + sqrt(1 − γ) ε``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .gamma_routing import route_gamma, scale_grad  # noqa: F401  (scale_grad: re-exported)
from .nets.unet import UNet
from .options import EPS_GRAD_MODES, POINT_ESTIMATES, UNCERTAINTIES, choose
from .sampling import Denoiser, SampleOutput, check_eta, sample_loop, sample_statistics
from .schedule import Schedule, build_schedule, working_dtype
from .variance_head import VarianceHead, gaussian_nll, one_pass

if TYPE_CHECKING:
    from .config import ModelConfig


def noise_features(gamma: Tensor) -> Tensor:
    """Per-pixel noise-level features for the denoiser: ``[B, C, H, W]`` → ``[B, 3C, H, W]``.

    sqrt(γ), sqrt(1 − γ) and log-SNR/10 (clamped to ±2), so that both ends of the
    schedule stay distinguishable in float32.
    """
    log_snr = (torch.log(gamma) - torch.log1p(-gamma)).clamp(-20.0, 20.0) / 10.0
    return torch.cat([gamma.sqrt(), (1 - gamma).sqrt(), log_snr], dim=1)


def gaussian_kl_std_normal_to(mean: Tensor, var: Tensor) -> Tensor:
    """KL( N(0, 1) ‖ N(mean, var) ) elementwise (the authors' L_prior direction)."""
    return 0.5 * (torch.log(var) - 1.0 + (1.0 + mean.square()) / var)


def residual_base(x: Tensor, out_channels: int) -> Tensor:
    """The baseline a residual model predicts around: the condition's last ``out_channels``
    channels ``[B, C_out, H, W]`` of ``x`` ``[B, C_in, H, W]`` — the upsampled input for
    super-resolution (C_in = C_out), the TIE phase channel for phase with
    ``data.baseline_channel`` (:meth:`~microdiff.data.tasks.Task.condition`)."""
    if x.shape[1] < out_channels:
        raise ValueError(f"the residual target needs at least {out_channels} input channel(s), "
                         f"got {x.shape[1]}")
    return x[:, x.shape[1] - out_channels:]


class CVDM(nn.Module):
    """Conditional Variational Diffusion Model.

    Args:
        schedule: a :class:`~microdiff.schedule.Schedule` (learned or fixed).
        denoiser: U-Net predicting ε from ``[y_t, x(, μ)]`` and the noise-level features of γ.
        timesteps: T of METHOD.md; sets t₀ = 1/T and t₁ = 1 − 1/T in L_β and L_prior.
        weights: loss weights for ``eps``, ``beta``, ``prior``, ``gamma`` (and ``mean``).
        alpha: the curvature weight α inside L_γ.
        residual: diffuse ``y − x`` and add ``x`` back after sampling.
        mean_net: ZMD's deterministic U-Net μ(x) (None disables ZMD).
        zmd_sigma: ZMD's fixed scale σ.
        zmd_scaled: μ(x) = target_scale · mean_net(x) and its loss in units of target_scale
            (the regression model's parameterisation) instead of μ(x) = mean_net(x).
        target_scale: the diffused quantity is divided by this (set it near the target's
            or residual's standard deviation so diffusion sees unit-variance data; the
            reference code uses 1 with data in [−1, 1]). Multiplies σ under ZMD.
        eps_grad: how the ε-loss's gradient reaches the schedule (see :func:`route_gamma`):
            ``full`` (the paper), ``elbo`` or ``none``. The denoiser's gradient is the same
            in all three.
        schedule_lr_scale: learning-rate multiplier of the schedule's parameters (see
            :meth:`parameter_groups`; 0 freezes the schedule).
        var_net: the variance head (needs ``mean_net``): a U-Net on ``[x, μ(x)/mean_scale]``
            predicting log σ² of the residual ``(y − x_res − μ(x)) / mean_scale`` per pixel,
            trained by the ``variance`` term (a Gaussian negative log-likelihood) with μ and x
            detached, so no other parameter's gradient changes. None disables it.
    """

    #: draws posterior samples (a regression model gives one answer and no uncertainty)
    generative = True

    def __init__(
        self,
        schedule: Schedule,
        denoiser: UNet,
        timesteps: int = 200,
        weights: dict[str, float] | None = None,
        alpha: float = 1e-3,
        residual: bool = False,
        mean_net: UNet | None = None,
        zmd_sigma: float = 0.5,
        zmd_scaled: bool = False,
        target_scale: float = 1.0,
        eps_grad: str = "full",
        schedule_lr_scale: float = 1.0,
        var_net: VarianceHead | None = None,
    ) -> None:
        super().__init__()
        self.eps_grad = choose(eps_grad, EPS_GRAD_MODES, "eps_grad")
        self.schedule_lr_scale = schedule_lr_scale
        self.schedule = schedule
        self.denoiser = denoiser
        self.mean_net = mean_net
        if var_net is not None and mean_net is None:
            raise ValueError("the variance head needs the ZMD mean network (model.zmd.enabled)")
        self.var_net = var_net
        self.timesteps = timesteps
        self.weights = {"eps": 1.0, "beta": 2.0, "prior": 2.0, "gamma": 2.0, "mean": 1.0, "variance": 1.0}
        self.weights.update(weights or {})
        self.alpha = alpha
        self.residual = residual
        self.zmd_sigma = zmd_sigma
        self.mean_scale = target_scale if zmd_scaled else 1.0
        self.scale = target_scale * (zmd_sigma if mean_net is not None else 1.0)

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> CVDM:
        """Build from a validated :class:`~microdiff.config.ModelConfig`."""
        schedule = build_schedule(
            cfg.schedule.kind,
            cfg.in_channels,
            cfg.out_channels,
            cfg.schedule.net,
            time_hidden=cfg.schedule.time_hidden,
            exact_components=cfg.schedule.exact_components,
            lambda_range=cfg.schedule.lambda_range,
        )
        zmd = cfg.zmd.enabled
        extra = cfg.out_channels if zmd else 0
        denoiser = UNet(
            cfg.out_channels + cfg.in_channels + extra,
            cfg.out_channels,
            cfg.denoiser,
            cond_channels=3 * cfg.out_channels,
        )
        mean_net = UNet(cfg.in_channels, cfg.out_channels, cfg.zmd.net) if zmd else None
        # built last, so the other networks' initial weights do not depend on it
        spec = cfg.zmd.variance_net
        var_net = (VarianceHead(cfg.in_channels + cfg.out_channels, cfg.out_channels, spec)
                   if zmd and spec else None)
        return cls(
            schedule,
            denoiser,
            timesteps=cfg.timesteps,
            weights=cfg.loss.weights(),
            alpha=cfg.loss.alpha,
            residual=cfg.residual,
            mean_net=mean_net,
            zmd_sigma=cfg.zmd.sigma,
            zmd_scaled=cfg.zmd.scaled,
            target_scale=cfg.target_scale,
            eps_grad=cfg.schedule.eps_grad,
            schedule_lr_scale=cfg.schedule.lr_scale,
            var_net=var_net,
        )

    # --- the model interface (microdiff.models.ImageModel) -------------------------------
    @property
    def out_channels(self) -> int:
        return self.schedule.out_channels

    @property
    def main_network(self) -> nn.Module:
        """The network run at every training and sampling step (what ``train.compile`` compiles)."""
        return self.denoiser

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups: one, or two when the schedule has its own learning-rate scale
        (its parameters then carry ``lr_scale``, which the trainer multiplies in)."""
        own = list(self.schedule.parameters())
        if self.schedule_lr_scale == 1.0 or not own:
            return [{"params": list(self.parameters())}]
        ids = {id(p) for p in own}
        return [{"params": [p for p in self.parameters() if id(p) not in ids]},
                {"params": own, "lr_scale": self.schedule_lr_scale}]

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """The parameters of each module (denoiser, schedule, ZMD mean net, variance head), for
        per-module gradient clipping."""
        modules = [self.denoiser, self.schedule] + [m for m in (self.mean_net, self.var_net) if m is not None]
        return [ps for m in modules if (ps := list(m.parameters()))]

    # --- targets ----------------------------------------------------------------------
    def base(self, x: Tensor) -> Tensor | None:
        """The part of ``y`` not diffused: :func:`residual_base` of ``x`` with the residual
        target (else None)."""
        return residual_base(x, self.out_channels) if self.residual else None

    def predict_mean(self, x: Tensor) -> Tensor | None:
        """ZMD's μ(x) (None without ZMD), in target units around the residual base."""
        if self.mean_net is None:
            return None
        mu = self.mean_net(x)
        return mu if self.mean_scale == 1.0 else self.mean_scale * mu

    def predict_log_var(self, x: Tensor, mu: Tensor) -> Tensor:
        """The variance head's log σ² ``[B, C, H, W]`` of the residual around ``mu`` (ZMD's
        μ(x), target units), in units of ``mean_scale``²; inputs are detached."""
        if self.var_net is None:
            raise ValueError("this model has no variance head (model.zmd.variance_net)")
        return self.var_net.log_var(x.to(working_dtype(x)), mu / self.mean_scale)

    def predict_std(self, x: Tensor, mu: Tensor | None = None) -> Tensor:
        """The variance head's σ(x) ``[B, C, H, W]`` in target units (one pass; ``mu`` is
        computed when not given)."""
        mu = self.predict_mean(x) if mu is None else mu
        if mu is None:
            raise ValueError("the variance head needs the ZMD mean network (model.zmd.enabled)")
        return self.mean_scale * torch.exp(0.5 * self.predict_log_var(x, mu))

    def to_diffused(self, x: Tensor, y: Tensor, mu: Tensor | None) -> Tensor:
        """``y`` → the diffused quantity ``y0 = (y − x_res − sg[μ]) / scale``."""
        base = self.base(x)
        r = y if base is None else y - base
        if mu is not None:
            r = r - mu.detach()
        return r / self.scale

    def from_diffused(self, x: Tensor, y0: Tensor, mu: Tensor | None) -> Tensor:
        """Inverse of :meth:`to_diffused`."""
        r = y0 * self.scale if mu is None else y0 * self.scale + mu  # invert (r − sg[μ]) / scale
        base = self.base(x)
        return r if base is None else r + base

    # --- the network call --------------------------------------------------------------
    def eps_hat(self, y_t: Tensor, x: Tensor, gamma: Tensor, mu: Tensor | None) -> Tensor:
        """ε̂ = ε_θ(y_t, x(, μ), γ): all ``[B, ·, H, W]``."""
        inputs = [y_t, x] if mu is None else [y_t, x, mu]
        out = self.denoiser(torch.cat(inputs, dim=1), noise_features(gamma))
        return out.to(working_dtype(y_t))

    # --- the loss ----------------------------------------------------------------------
    def draw_noise(self, shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu",
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The loss's random draws for targets of ``shape`` ``[B, C, H, W]``: times ``t``
        ``[B]`` in [0, 1) and standard normal ``eps`` ``[B, C, H, W]`` (float32)."""
        t = torch.rand(shape[0], device=device, generator=generator)
        eps = torch.randn(shape, device=device, generator=generator)
        return t, eps

    def loss(
        self, x: Tensor, y: Tensor, generator: torch.Generator | None = None,
        noise: tuple[Tensor, Tensor] | None = None, head_mean: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Per-example loss terms of METHOD.md, each ``Tensor[B]`` (unweighted).

        The random draws come from ``generator``, or are given as ``noise`` (``t``, ``eps``
        from :meth:`draw_noise`): a multi-process run draws them for the global batch and
        passes each rank its slice.

        ``eps``: ‖ε − ε̂‖²; ``beta``: ‖∂γ/∂t + βγ‖² + ‖γ(t₀) − 1‖² + ‖γ(t₁)‖²;
        ``prior``: KL(N(0,1) ‖ q(y_{t₁} | y0)); ``gamma``: α (∂²γ/∂t²)²; ``mean`` (ZMD):
        ‖μ(x) − (y − x_res)‖²; ``variance`` (the variance head): ½(s + r² e⁻ˢ) with s the
        head's log σ² and r = (y − x_res − sg[μ̄]) / mean_scale, minimised at e^s = E[r² | x];
        μ̄ is ``head_mean`` when given (the trainer passes the EMA model's μ(x), the mean that
        predicts, whose error is smaller than the live network's), else μ.
        Each is a mean over pixels and channels.
        Use :meth:`total_loss` for the weighted sum.
        """
        if x.shape[0] != y.shape[0] or x.shape[-2:] != y.shape[-2:]:
            raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must share B, H and W")
        b = x.shape[0]
        x, y = x.to(working_dtype(x)), y.to(working_dtype(x))
        mu = self.predict_mean(x)
        y0 = self.to_diffused(x, y, mu)
        t, eps = noise if noise is not None else self.draw_noise(y0.shape, y0.device, generator)
        if t.shape != (b,) or eps.shape != y0.shape:
            raise ValueError(f"noise {tuple(t.shape)}, {tuple(eps.shape)} does not fit y {tuple(y.shape)}")

        lam = self.schedule.lam(x)  # once per batch, reused for every t below
        d = self.schedule.derivatives_at(t, lam)
        gamma = route_gamma(d.gamma, d.dgamma_dt, self.eps_grad).expand_as(y0)
        y_t = gamma.sqrt() * y0 + (1 - gamma).sqrt() * eps
        eps_hat = self.eps_hat(y_t, x, gamma, None if mu is None else mu.detach())

        t0 = torch.full_like(t, 1.0 / self.timesteps)
        t1 = torch.full_like(t, 1.0 - 1.0 / self.timesteps)
        gamma0 = self.schedule.gamma_at(t0, lam).expand_as(y0)
        gamma1 = self.schedule.gamma_at(t1, lam).expand_as(y0)

        def mean(v: Tensor) -> Tensor:
            return v.flatten(1).mean(1)

        endpoints = mean((gamma0 - 1).square()) + mean(gamma1.square())
        if self.schedule.rate_is_exact:  # τ = ρ′ by construction: ∂γ/∂t + βγ ≡ 0
            flow = torch.zeros_like(endpoints)
        else:
            beta = self.schedule.beta_at(t, lam).expand_as(y0)
            flow = mean((d.dgamma_dt.expand_as(y0) + beta * gamma).square())
        terms = {
            "eps": mean((eps - eps_hat).square()),
            "beta": flow + endpoints,
            "prior": mean(gaussian_kl_std_normal_to(gamma1.sqrt() * y0, 1 - gamma1)),
            "gamma": self.alpha * mean(d.d2gamma_dt2.expand_as(y0).square()),
        }
        if mu is not None:
            terms |= {k: mean(v) for k, v in self._mean_terms(x, y, mu, head_mean).items()}
        return terms

    def _mean_terms(self, x: Tensor, y: Tensor, mu: Tensor, head_mean: Tensor | None) -> dict[str, Tensor]:
        """The per-pixel ``mean`` (ZMD) and ``variance`` (the head's) terms of :meth:`loss`."""
        base = self.base(x)
        target = y if base is None else y - base
        terms = {"mean": ((target - mu) / self.mean_scale).square()}
        if self.var_net is not None:
            ref = mu.detach() if head_mean is None else head_mean.detach().to(mu.dtype)
            r2 = ((target - ref) / self.mean_scale).square()
            terms["variance"] = gaussian_nll(self.predict_log_var(x, ref), r2)
        return terms

    def total_loss(self, terms: dict[str, Tensor]) -> Tensor:
        """Weighted sum of the terms, averaged over the batch: a scalar."""
        return sum(self.weights[k] * v.mean() for k, v in terms.items())

    # --- sampling ----------------------------------------------------------------------
    def _check_sample_options(self, steps: int, samples: int, eta: float, clip: float | None,
                              point_estimate: str, uncertainty: str) -> None:
        """A ValueError naming the first option of :meth:`sample` that does not apply."""
        choose(point_estimate, POINT_ESTIMATES, "point estimate")
        choose(uncertainty, UNCERTAINTIES, "uncertainty")
        if uncertainty == "head" and self.var_net is None:
            raise ValueError("uncertainty head needs the variance head (model.zmd.variance_net)")
        check_eta(eta)
        if steps < 1:
            raise ValueError("steps must be at least 1")
        if point_estimate == "mean-net" and self.mean_net is None:
            raise ValueError("point_estimate mean-net needs the ZMD mean network (model.zmd.enabled)")
        if samples < 0:
            raise ValueError("samples must not be negative")
        if samples == 0 and (point_estimate, uncertainty) != ("mean-net", "head"):
            raise ValueError("samples=0 (one pass, no sampling) needs point_estimate mean-net and "
                             "uncertainty head")
        if clip is not None and clip <= 0:
            raise ValueError("clip must be positive (or None)")

    @torch.no_grad()
    def sample(
        self,
        x: Tensor,
        steps: int = 50,
        samples: int = 1,
        generator: torch.Generator | None = None,
        eta: float = 1.0,
        grid: str = "gamma",
        clip: float | None = None,
        progress: bool = False,
        on_step: Callable[[], None] | None = None,
        eps_fn: Denoiser | None = None,
        point_estimate: str = "sample-mean",
        gamma_min: float | None = None,
        uncertainty: str = "samples",
    ) -> SampleOutput:
        """K posterior samples of y for each condition x ``[B, C_in, H, W]``, their mean and std.

        The schedule's λ(x) is computed once per image and its log-γ grid (``grid``: see
        :meth:`~microdiff.schedule.Schedule.log_gamma_grid`) drives :func:`~microdiff.sampling.sample_loop`
        for all K samples together (network calls per image: 1 schedule U-Net + ``steps``
        denoiser calls, + 1 ZMD mean net). eta: 1 ancestral (DDPM), 0 deterministic (DDIM).
        clip: bound on |ŷ0| in the units of the diffused part of y (the residual y − x with
        the residual target, else y; minus μ(x) under ZMD; before ``target_scale``).
        eps_fn: replaces the denoiser, ``eps_fn(y_t, γ_t, step) -> ε̂`` in diffused units (the
        oracle tests). progress, on_step: see :func:`~microdiff.sampling.sample_loop`.
        point_estimate: ``sample-mean`` (``mean`` is the K samples' mean) or ``mean-net``
        (``mean`` is ZMD's μ(x) on top of the residual base: one pass, no sampling noise).
        gamma_min: start sampling at γ ≥ this (see :meth:`~microdiff.schedule.Schedule.log_gamma_grid`).
        uncertainty: ``samples`` (``std`` is the K samples' spread) or ``head`` (``std`` is the
        variance head's σ(x), :meth:`predict_std`: one more network call, no sampling noise).
        ``samples=0`` with ``point_estimate="mean-net"`` and ``uncertainty="head"`` is the
        one-pass prediction: no sampling loop (``samples`` is empty, ``sample_mean`` None; network
        calls: the mean net, the head and the schedule's for ``gamma_half``; ``on_step`` once).
        """
        self._check_sample_options(steps, samples, eta, clip, point_estimate, uncertainty)
        x = x.to(working_dtype(x))
        b, k, c, (h, w) = x.shape[0], samples, self.out_channels, x.shape[-2:]
        lam = self.schedule.lam(x)  # the schedule U-Net: once per image
        if k == 0:
            return one_pass(self, x, lam, on_step)
        log_g = self.schedule.log_gamma_grid(lam, steps, grid, gamma_min)
        log_g = log_g.expand(steps + 1, b, c, h, w).repeat_interleave(k, dim=1)
        mu = self.predict_mean(x)
        x_k = x.repeat_interleave(k, dim=0)
        mu_k = None if mu is None else mu.repeat_interleave(k, dim=0)
        denoise = eps_fn or (lambda y_t, gamma_t, step: self.eps_hat(y_t, x_k, gamma_t, mu_k))
        y0 = sample_loop(denoise, log_g, generator, eta, None if clip is None else clip / self.scale,
                         progress, on_step)
        out = self.from_diffused(x_k, y0, mu_k).view(b, k, c, h, w)
        mean, std = sample_statistics(out)
        point = mean if point_estimate == "sample-mean" else self.from_diffused(x, torch.zeros_like(mean), mu)
        if uncertainty == "head":
            std = self.predict_std(x, mu)
        gamma_half = self.schedule.gamma_at(torch.full((b,), 0.5, device=x.device), lam)
        calls = steps + int(self.schedule.uses_network) + int(mu is not None) + int(uncertainty == "head")
        return SampleOutput(point, std, out, gamma_half.expand(b, c, h, w), calls, sample_mean=mean)
