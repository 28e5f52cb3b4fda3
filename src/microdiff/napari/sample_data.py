"""napari sample data from the built-in simulators (no download)."""

from __future__ import annotations

import numpy as np

from ..data.phase_truth import QPIConfig, phase_map, simulate_qpi
from ..data.synthetic import SimulatorConfig, simulate_pair
from .geometry import output_geometry


def simulated_pair(size: int = 256, seed: int = 0) -> list[tuple]:
    """A widefield image (camera counts) and its SIM-like target at 2× the sampling, both
    in µm world coordinates (the target lies on the widefield's grid)."""
    cfg = SimulatorConfig()
    pair = simulate_pair("mixed", size, np.random.default_rng(seed), cfg)
    px = cfg.input_pixel_um
    factor = pair.target.shape[-1] // pair.low.shape[-1]
    scale, translate = output_geometry((px, px), (0.0, 0.0), factor)
    return [
        (pair.low.astype(np.float32), {"name": "widefield (simulated)", "scale": (px, px), "units": "um"}),
        (pair.target.astype(np.float32), {"name": "SIM target (simulated)", "scale": scale,
                                          "translate": translate, "units": "um", "visible": False}),
    ]


def simulated_qpi(size: int = 256, seed: int = 0) -> list[tuple]:
    """Defocused intensities at ±Δz (two channels, ``CYX``, raw: unit illumination) and the
    phase map (rad). Raw intensities suit both input normalisations (min-max models
    normalise them themselves)."""
    cfg = QPIConfig()
    rng = np.random.default_rng(seed)
    phi, _ = phase_map("natural", size, rng)
    stack, _ = simulate_qpi(phi, cfg, rng, normalize=False)
    px = cfg.pixel_um
    return [
        (stack.astype(np.float32), {"name": "defocus pair (simulated)", "scale": (1.0, px, px),
                                    "units": ("", "um", "um")}),
        (phi.astype(np.float32), {"name": "phase truth (rad, simulated)", "scale": (px, px), "units": "um",
                                  "visible": False}),
    ]
