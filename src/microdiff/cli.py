"""Command line: ``microdiff demo`` and ``microdiff simulate`` (more arrive with the workflow)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Conditional Variational Diffusion Models for microscopy inverse problems.")


@app.callback()
def _root() -> None:
    """microdiff command line."""


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("demo-run"),
    steps: Annotated[int | None, typer.Option(help="training steps (default: the preset's)")] = None,
    config: Annotated[str, typer.Option(help="preset name or YAML file")] = "demo",
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train a small CVDM on built-in filament images and compare it with bicubic upsampling."""
    from .config import load_config
    from .demo import run_demo

    cfg = load_config(config)
    if steps is not None:
        if steps < 1:
            raise UserError("--steps must be at least 1")
        cfg.train.steps = steps
    run_demo(out, cfg, progress=not quiet)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="output folder (gets input/, target/, manifest.json)")],
    structure: Annotated[str, typer.Option(help="mt, factin, ccp, er or mixed")] = "mixed",
    n: Annotated[int, typer.Option(help="number of pairs")] = 16,
    size: Annotated[int, typer.Option(help="target size in pixels (input: size / 2)")] = 256,
    level: Annotated[int | None, typer.Option(help="signal level 1..9 (default: drawn)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace existing files")] = False,
) -> None:
    """Simulate BioSR-like widefield/SIM pairs as TIFFs with pixel sizes."""
    from .data.simulate_files import write_simulated_pairs

    write_simulated_pairs(out, structure, n, size, level, seed, overwrite=overwrite)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
