"""microdiff: Conditional Variational Diffusion Models for imaging inverse problems.

Public API (see DESIGN.md)::

    cfg = microdiff.load_config("demo")            # a preset name or a YAML path
    model = microdiff.build_model(cfg.model)           # a CVDM (or the regression baseline)
    terms = model.loss(x, y)                        # dict[str, Tensor[B]]
    out = model.sample(x, steps=50, samples=8, generator=torch.Generator().manual_seed(0))
    pred = microdiff.load("demo-run/model")         # an inference bundle → Predictor
    res = pred.predict(image, axes="YX", samples=8, steps=20)   # any size, input units
"""

from ._version import __version__
from .config import Config, load_config
from .diffusion import CVDM
from .errors import UserError
from .models import ImageModel, build_model
from .predictor import Prediction, Predictor, load
from .sampling import SampleOutput
from .schedule import FixedSchedule, LearnedSchedule, Schedule

__all__ = [
    "CVDM",
    "Config",
    "FixedSchedule",
    "ImageModel",
    "LearnedSchedule",
    "SampleOutput",
    "Schedule",
    "UserError",
    "__version__",
    "build_model",
    "load",
    "load_config",
    "Prediction",
    "Predictor",
]
