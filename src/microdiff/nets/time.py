"""The time networks of learned schedules, ρ(t) (and τ(t) of the faithful one), and the
reference curve both start from (see :mod:`microdiff.schedule`). Each maps times
``t`` ``[B]`` in [0, 1] to ``[B]``; they know nothing of images or diffusion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAMBDA0 = math.log(2.0)  # λ = softplus(0): a learned schedule's value at initialisation


def reference_rho(t: Tensor) -> Tensor:
    """The schedule both learned variants start from, as ρ(t) for λ = ln 2 (λρ = u):

        u(t) = (π²/4) t² + W [σ(15 (t − 0.9)) − σ(−13.5)],   W such that u(1) = 11.5.

    Cosine-like: flat at t = 0 (as cos², whose u ≈ π²t²/4), steep near t = 1, γ(1) ≈ 1e-5,
    and small curvature ∂²γ/∂t² everywhere, so L_γ does not flatten it at once. t ``[B]``.
    (A freshly initialised schedule U-Net gives λ around ln 2, not exactly: about 0.3–1.6
    per pixel, so γ starts near this reference, not on it.)
    """
    return (_REF_A * t.square() + _REF_W * (torch.sigmoid(15 * (t - 0.9)) - _REF_SIG0)) / LAMBDA0


def reference_tau(t: Tensor) -> Tensor:
    """ρ′ of :func:`reference_rho`."""
    sig = torch.sigmoid(15 * (t - 0.9))
    return (2 * _REF_A * t + _REF_W * 15 * sig * (1 - sig)) / LAMBDA0


_REF_A = math.pi**2 / 4
_REF_SIG0 = 1 / (1 + math.exp(13.5))
_REF_W = (11.5 - _REF_A) / (1 / (1 + math.exp(-1.5)) - _REF_SIG0)


class MonotoneTimeNet(nn.Module):
    """The authors' (VDM-style) time network, faithful in form: f(t) = t · m(t) with

        h = |w₁| t + b₁,   m = h + |W₃| sigmoid(|W₂| h + b₂) + b₃,

    non-negative weights and free biases (so monotonicity and positivity are approximate,
    as in the reference code). t ``[B]`` → ``[B]``.

    Initialisation (ours; the reference uses Keras defaults): :meth:`fit` by least squares
    to a target curve, so the ρ net starts at :func:`reference_rho` and the τ net at its
    derivative (consistent: ρ ≈ ∫τ from step 0).
    """

    def __init__(self, hidden: int = 1024) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.ones(1))
        self.b1 = nn.Parameter(torch.zeros(1))
        self.w2 = nn.Parameter(torch.empty(hidden).uniform_(-20.0, 20.0))
        self.b2 = nn.Parameter(-self.w2.detach().abs() * torch.rand(hidden))  # steps inside [0, 1]
        self.w3 = nn.Parameter(torch.empty(hidden).uniform_(-1e-2, 1e-2))
        self.b3 = nn.Parameter(torch.zeros(1))

    def forward(self, t: Tensor) -> Tensor:
        h = self.w1.abs() * t + self.b1  # [B]
        hidden = torch.sigmoid(h[:, None] * self.w2.abs() + self.b2)  # [B, hidden]
        m = h + hidden @ self.w3.abs() + self.b3
        return t * m

    @torch.no_grad()
    def fit(self, target, steps: int = 400, lr: float = 0.05) -> float:
        """Least-squares fit of f(t) to ``target(t)`` on [0, 1] (relative error); returns
        the final root-mean-square relative error. Deterministic given the parameters."""
        t = torch.linspace(0.0, 1.0, 101)
        goal = target(t)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                err = ((self(t) - goal) / (goal.abs() + 1.0)).square().mean()
                opt.zero_grad()
                err.backward()
                opt.step()
        return float(err.sqrt())


class ExactIntegralTimeNet(nn.Module):
    """ρ(t) with ρ(0) = 0, ρ′ = τ ≥ 0 exactly, so γ = exp(−λρ) is monotone by construction:

        ρ(t) = a t + b t² + Σ_k w_k [σ(s_k (t − c_k)) − σ(−s_k c_k)],   a, b, w_k, s_k ≥ 0.

    Initialised to :func:`reference_rho` exactly (component 0 carries its sigmoid; the
    others start small and spread over [0, 1]).
    """

    def __init__(self, components: int = 16) -> None:
        super().__init__()
        w = torch.full((components,), -6.0)  # softplus(−6) ≈ 2.5e-3
        w[0] = _softplus_inverse(torch.tensor(_REF_W / LAMBDA0))
        s = torch.full((components,), 10.0)
        s[0] = 15.0
        c = torch.linspace(0.0, 1.0, components)
        c[0] = 0.9
        self.a_raw = nn.Parameter(torch.tensor(-8.0))  # softplus ≈ 3e-4
        self.b_raw = nn.Parameter(_softplus_inverse(torch.tensor(_REF_A / LAMBDA0)))
        self.w_raw = nn.Parameter(w)
        self.s_raw = nn.Parameter(_softplus_inverse(s))
        self.c = nn.Parameter(c)

    def forward(self, t: Tensor) -> Tensor:
        a, b = F.softplus(self.a_raw), F.softplus(self.b_raw)
        w, s = F.softplus(self.w_raw), F.softplus(self.s_raw)
        sig = torch.sigmoid(s * (t[:, None] - self.c)) - torch.sigmoid(-s * self.c)
        return a * t + b * t.square() + sig @ w

    def derivative(self, t: Tensor) -> Tensor:
        """ρ′(t) in closed form (equal to autograd's; used where no graph is wanted)."""
        a, b = F.softplus(self.a_raw), F.softplus(self.b_raw)
        w, s = F.softplus(self.w_raw), F.softplus(self.s_raw)
        sig = torch.sigmoid(s * (t[:, None] - self.c))
        return a + 2 * b * t + (sig * (1 - sig) * s) @ w


def _softplus_inverse(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))
