"""``microdiff simulate``: write simulated pairs as a paired data folder (super-resolution
pairs from the BioSR-like simulator, or QPI pairs: :func:`write_qpi_pairs`).

Layout: ``OUT/input/NAME.tif`` (widefield camera counts, uint16, 62.6 nm/px by default),
``OUT/target/NAME.tif`` (noise-free SIM-like image, float32, 31.3 nm/px) and
``OUT/manifest.json`` (the simulator configuration, the seed, and every value drawn per
pair). Pair ``i`` uses the generator ``numpy.random.default_rng([seed, i])``, so any pair
can be regenerated alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._version import __version__
from ..errors import UserError
from .io import Image, atomic_write_bytes, write_image
from .phase_truth import PHASE_SOURCES, QPI_TASKS, QPIConfig, phase_map, simulate_qpi
from .synthetic import STRUCTURES, SimulatorConfig, simulate_pair


def write_simulated_pairs(
    out: Path,
    structure: str,
    n: int,
    size: int,
    level: int | None = None,
    seed: int = 0,
    cfg: SimulatorConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Simulate ``n`` pairs into ``out``; returns the manifest path."""
    cfg = cfg or SimulatorConfig()
    if structure not in STRUCTURES:
        raise UserError(f"--structure must be one of {', '.join(STRUCTURES)}, not {structure!r}")
    if n < 1:
        raise UserError("--n must be at least 1")
    if size < 8 or size % cfg.scale:
        raise UserError(f"--size must be at least 8 and a multiple of {cfg.scale}, not {size}")
    if level is not None and not 1 <= level <= 9:
        raise UserError(f"--level must be between 1 and 9, not {level}")
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not overwrite:
        raise UserError(f"{out} already holds a simulated data set; use --overwrite to replace it")
    pairs = []
    for i in tqdm(range(n), desc="simulating", disable=not progress, dynamic_ncols=True):
        pair = simulate_pair(structure, size, np.random.default_rng([seed, i]), cfg, level)
        name = f"{structure}_{i:05d}.tif"
        low = np.clip(np.rint(pair.low), 0, np.iinfo(np.uint16).max).astype(np.uint16)
        write_image(out / "input" / name, Image(low, "YX", cfg.input_pixel_um), overwrite)
        write_image(out / "target" / name, Image(pair.target, "YX", cfg.target_pixel_um), overwrite)
        pairs.append({"name": name, **pair.params})
    manifest = {"microdiff_version": __version__, "structure": structure, "n": n, "size": size,
                "level": level, "seed": seed, "simulator": cfg.to_dict(), "pairs": pairs}
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2).encode(), overwrite=True)
    return manifest_path


def write_qpi_pairs(
    out: Path,
    task: str,
    n: int,
    size: int,
    source: str = "natural",
    structure: str = "mixed",
    seed: int = 0,
    phase_range: float = 3.5,
    cfg: QPIConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    raw: bool = False,
) -> Path:
    """Simulate ``n`` QPI pairs into ``out``: ``input/NAME.tif`` the acquisition (``CYX``
    float32, 2 channels for qpi-2shot, 3 for qpi-poly, min-max normalised, or ``raw``
    intensities at unit illumination) and
    ``target/NAME.tif`` the phase (``YX`` float32, rad), both at ``cfg.pixel_um``; pair ``i``
    uses ``numpy.random.default_rng([seed, i])``. Returns the manifest path."""
    if task not in QPI_TASKS:
        raise UserError(f"--task must be sr or one of {', '.join(QPI_TASKS)}, not {task!r}")
    if source not in PHASE_SOURCES:
        raise UserError(f"--source must be one of {', '.join(PHASE_SOURCES)}, not {source!r}")
    if source == "structures" and structure not in STRUCTURES:
        raise UserError(f"--structure must be one of {', '.join(STRUCTURES)}, not {structure!r}")
    if n < 1:
        raise UserError("--n must be at least 1")
    if size < 8:
        raise UserError(f"--size must be at least 8, not {size}")
    if not phase_range > 0:
        raise UserError(f"--phase-range must be positive, not {phase_range}")
    cfg = cfg or QPIConfig(task=task)
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not overwrite:
        raise UserError(f"{out} already holds a simulated data set; use --overwrite to replace it")
    pairs = []
    for i in tqdm(range(n), desc=f"simulating {task}", disable=not progress, dynamic_ncols=True):
        rng = np.random.default_rng([seed, i])
        phi, info = phase_map(source, size, rng, phase_range, structure, cfg.pixel_um)
        stack, drawn = simulate_qpi(phi, cfg, rng, normalize=not raw)
        name = f"{task}_{i:05d}.tif"
        write_image(out / "input" / name, Image(stack, "CYX", cfg.pixel_um), overwrite)
        write_image(out / "target" / name, Image(phi.astype(np.float32), "YX", cfg.pixel_um), overwrite)
        pairs.append({"name": name, **info, **drawn})
    manifest = {"microdiff_version": __version__, "task": task, "n": n, "size": size, "source": source,
                "structure": structure if source == "structures" else None, "seed": seed,
                "phase_range_rad": phase_range, "acquisition": cfg.to_dict(),
                "input": "raw" if raw else "minmax", "pairs": pairs}
    atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2).encode(), overwrite=True)
    return manifest_path
