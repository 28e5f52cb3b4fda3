"""Shared helpers for benchmark scripts: machine description and docs/benchmarks.md sections."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nEvery figure here is written by a script in `benchmarks/`; each section "
          "names the command that regenerates it, the machine and the date.\n")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {dev}, Python {platform.python_version()}")


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section delimited by markers for ``name``, atomically."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, DOC)


def pm(values, digits: int = 3, sign: bool = False) -> str:
    """``mean ± std`` of ``values`` (the population std, over seeds or draws); the mean alone
    for one value; ``sign``: the mean with its sign."""
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    fmt = f"{'+' if sign else ''}.{digits}f"
    return f"{a.mean():{fmt}} ± {a.std():.{digits}f}" if a.size > 1 else f"{a.mean():{fmt}}"


def per_seed_main(doc: str, section: str, measure, report) -> None:
    """The command line of a per-seed analysis of one method's long runs: ``--method`` and
    ``--seeds``; ``measure(method, seed)`` per seed, ``report(args, results, seconds)`` the
    markdown written to the ``SECTION-METHOD`` section of docs/benchmarks.md and printed."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--method", default="zmd-scaled-var-any")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results = {s: measure(args.method, s) for s in args.seeds}
    body = report(args, results, time.perf_counter() - t0)
    write_section(f"{section}-{args.method}", body)
    print(body)
