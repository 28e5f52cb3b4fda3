"""Every enumerated choice of microdiff, defined once.

Each is a ``Literal`` type (used by the pydantic config, so a wrong value is refused with
the list of valid ones) and a tuple of its values (used by the modules that act on it and
in their error messages). Nothing else here: no imports from the package.
"""

from __future__ import annotations

from typing import Literal, get_args

ScheduleKind = Literal["learned", "learned-exact", "fixed-linear", "fixed-cosine"]
EpsGrad = Literal["full", "elbo", "none"]
Grid = Literal["gamma", "beta-cumprod"]
ModelKind = Literal["cvdm", "regression"]
RegressionLoss = Literal["mse", "l1"]
TaskKind = Literal["sr", "qpi-2shot", "qpi-poly"]
InputNorm = Literal["minmax", "mean"]
Structure = Literal["mt", "factin", "ccp", "er", "mixed", "any"]
PhaseSource = Literal["natural", "structures", "cells", "natural+cells"]
Generator = Literal["simulator", "filaments"]
Optimizer = Literal["adam", "adamw"]
GradClipScope = Literal["global", "per-module"]
PointEstimate = Literal["sample-mean", "mean-net"]
Uncertainty = Literal["samples", "head"]
Device = Literal["auto", "cpu", "cuda"]

SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)
EPS_GRAD_MODES: tuple[str, ...] = get_args(EpsGrad)
GRIDS: tuple[str, ...] = get_args(Grid)
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
REGRESSION_LOSSES: tuple[str, ...] = get_args(RegressionLoss)
TASKS: tuple[str, ...] = get_args(TaskKind)
INPUT_NORMS: tuple[str, ...] = get_args(InputNorm)
STRUCTURES: tuple[str, ...] = get_args(Structure)
SINGLE_STRUCTURES: tuple[str, ...] = tuple(k for k in STRUCTURES if k not in ("mixed", "any"))
PHASE_SOURCES: tuple[str, ...] = get_args(PhaseSource)
POINT_ESTIMATES: tuple[str, ...] = get_args(PointEstimate)
UNCERTAINTIES: tuple[str, ...] = get_args(Uncertainty)
GRAD_CLIP_SCOPES: tuple[str, ...] = get_args(GradClipScope)
QPI_TASKS: tuple[str, ...] = tuple(t for t in TASKS if t != "sr")


def choose(value: str, allowed: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``allowed``, else a ValueError naming the choices."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
    return value
