"""Mutation check of the math tests: each listed mutation of the loss and sampler code must
make the fast tests fail. Not part of the test run (it runs pytest once per mutation, about
a minute each on a CPU); run it after changing the loss or the sampler::

    .venv/bin/python tests/mutation_check.py            # every mutation
    .venv/bin/python tests/mutation_check.py 3 7        # mutations 3 and 7

For every mutation the source tree is copied, one exact string is replaced (the script stops
when the string is gone: update the list with the code) and the math test files are run on
the copy. Prints one line per mutation and exits non-zero if any survives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_loss_math.py", "tests/test_diffusion.py", "tests/test_sampling.py",
         "tests/test_golden.py"]
D, S = "src/microdiff/diffusion.py", "src/microdiff/sampling.py"

#: (what, file, original, mutated)
MUTATIONS = [
    ("flow term's sign", D, "flow + endpoints", "endpoints - flow"),
    ("β's sign", D, "+ beta * gamma).square()", "- beta * gamma).square()"),
    ("total_loss ignores the weights", D, "self.weights[k] * v.mean()", "v.mean()"),
    ("prior KL mean without √γ₁", D, "gaussian_kl_std_normal_to(gamma1.sqrt() * y0,",
     "gaussian_kl_std_normal_to(y0,"),
    ("prior KL variance γ₁ instead of 1 − γ₁", D, "* y0, 1 - gamma1)", "* y0, gamma1)"),
    ("forward process without square roots", D, "y_t = gamma.sqrt() * y0 + (1 - gamma).sqrt() * eps",
     "y_t = gamma * y0 + (1 - gamma) * eps"),
    ("L_γ on the first derivative", D, "d.d2gamma_dt2.expand_as(y0)", "d.dgamma_dt.expand_as(y0)"),
    ("swapped endpoint terms", D, "mean((gamma0 - 1).square()) + mean(gamma1.square())",
     "mean((gamma1 - 1).square()) + mean(gamma0.square())"),
    ("swapped t₀ and t₁", D, "t0 = torch.full_like(t, 1.0 / self.timesteps)",
     "t0 = torch.full_like(t, 1.0 - 1.0 / self.timesteps)"),
    ("η in place of η² in the step variance", S, "(eta**2) *", "eta *"),
    ("η > 1 accepted", S, "if not 0.0 <= eta <= 1.0:", "if not 0.0 <= eta:"),
]


def run(index: int) -> bool:
    """True when mutation ``index`` is killed (some test fails)."""
    what, rel, old, new = MUTATIONS[index]
    with tempfile.TemporaryDirectory(prefix="microdiff-mutant-") as tmp:
        copy = Path(tmp)
        shutil.copytree(ROOT / "src", copy / "src")
        shutil.copytree(ROOT / "tests", copy / "tests")
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        path = copy / rel
        text = path.read_text()
        if text.count(old) != 1:
            sys.exit(f"mutation {index} ({what}): {old!r} occurs {text.count(old)} times in {rel}; "
                     "update MUTATIONS")
        path.write_text(text.replace(old, new))
        env = os.environ | {"PYTHONPATH": str(copy / "src")}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                              cwd=copy, env=env, capture_output=True, text=True)
    failed = [ln.split(" - ")[0].removeprefix("FAILED ") for ln in proc.stdout.splitlines()
              if ln.startswith("FAILED")]
    killed = proc.returncode != 0
    verdict = ("killed by " + failed[0] if failed else "killed") if killed else "SURVIVED"
    print(f"{index:2d} {what:45s} {verdict}", flush=True)
    return killed


if __name__ == "__main__":
    chosen = [int(a) for a in sys.argv[1:]] or range(len(MUTATIONS))
    survivors = [i for i in chosen if not run(i)]
    sys.exit(1 if survivors else 0)
