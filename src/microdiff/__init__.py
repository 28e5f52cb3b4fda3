"""microdiff: Conditional Variational Diffusion Models for imaging inverse problems.

Public API (see DESIGN.md)::

    cfg = microdiff.load_config("demo")            # a preset name or a YAML path
    model = microdiff.CVDM.from_config(cfg.model)
    terms = model.loss(x, y)                        # dict[str, Tensor[B]]
    out = model.sample(x, steps=50, samples=8, generator=torch.Generator().manual_seed(0))
"""

from .config import Config, load_config
from .diffusion import CVDM
from .errors import UserError
from .sampling import SampleOutput
from .schedule import FixedSchedule, LearnedSchedule, Schedule

__version__ = "0.1.0"

__all__ = [
    "CVDM",
    "Config",
    "FixedSchedule",
    "LearnedSchedule",
    "SampleOutput",
    "Schedule",
    "UserError",
    "__version__",
    "load_config",
]
