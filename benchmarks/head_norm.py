"""Does the variance head's normalisation explain its per-structure miscalibration? (issue 18)

The head, like every U-Net here, normalises with GroupNorm, whose statistics span the whole
input: trained on 64² patches, it sees other statistics on a whole 128² image, and its
σ(x) at a pixel then depends on the rest of the image. This script takes the finished long
runs (``quality.py --long``, 2000 steps) of ``--method`` and compares, on the same μ(x):

- the run's own head (trained jointly; GroupNorm), on whole images, on 64² tiles (the
  training patch size; overlap 16, blended as ``predict`` blends tiles), and in 64² tiles
  on [x, μ(x)] with μ(x) computed on the whole image (the point estimate kept whole);
- the head retrained alone for ``--steps`` steps against the run's final EMA μ(x), once with
  GroupNorm (a control for the retraining) and once with ``norm: pixel`` (each pixel's
  channels normalised on their own: the output no longer depends on the image size).

Scored on the validation images (``_protocol.validation_set(2)``, 16), the test images of
``quality.py`` (16) and held-out mixed images (``_protocol.mixed_set(4)``, 8): ±1σ coverage
and RMSE / RMV of the raw std, pooled and per structure, and on the test images the ±1σ per
structure and the RMSE / RMV range over the bins after an rms map fitted on the validation
images (``calibration.fit_std_calibration``). Retrained heads are cached in the run folder
(``head-{norm}-{steps}.pt``); ``--steps 0`` scores the run's own head only. Writes the
``head_norm-METHOD`` section of docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/head_norm.py [--method zmd-scaled-var-any] [--seeds 0 1] [--steps 1500]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff.calibration import calibration_bins, fit_std_calibration  # noqa: E402
from microdiff.data.datasets import random_patches, rotate_flip  # noqa: E402
from microdiff.data.sources import load_training_data  # noqa: E402
from microdiff.data.tiling import apply_tiled  # noqa: E402
from microdiff.variance_head import VarianceHead  # noqa: E402

TILE, OVERLAP = 64, 16
HEADS = [("trained", "whole"), ("trained", "tiles"), ("trained", "head-tiles"), ("group", "whole"),
         ("pixel", "whole")]


def retrained_head(model, cfg, run: Path, seed: int, norm: str, steps: int, loss=None,
                   name: str | None = None, head_class: type[VarianceHead] = VarianceHead,
                   init: dict | None = None, lr: float = 1e-3) -> VarianceHead:
    """The run's head architecture with ``norm``, trained alone (Adam ``lr``, 20 warm-up
    steps, clip 1, batch 8 of the run's patches and augmentation) against the final EMA
    μ(x), on ``loss(model, x, y, μ)`` (per-pixel; default the model's own Gaussian NLL of
    the residual; ``head_class``: how the head's output becomes log σ²; ``init``: weights to
    start from, default a fresh initialisation); cached in ``run`` as
    ``head-{name or norm}-{steps}.pt``. The model's own head is put back."""
    c = cfg.model
    spec = dataclasses.replace(c.zmd.variance_net, norm=norm)
    cache = run / f"head-{name or norm}-{steps}.pt"
    torch.manual_seed(seed)
    head = head_class(c.in_channels + c.out_channels, c.out_channels, spec)
    if cache.exists():
        head.load_state_dict(torch.load(cache)["state"])
        return head.eval()
    if init is not None:
        head.load_state_dict(init)
    loss = loss or (lambda m, x, y, mu: m._mean_terms(x, y, mu, None)["variance"])
    own, model.var_net = model.var_net, head
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    d = cfg.data
    pairs = load_training_data(d, seed, progress=False).train
    gen = torch.Generator().manual_seed(seed + 11)
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, step / 20)
        x, y, _ = random_patches(pairs, 8, d.size, gen, d.min_contrast)
        x, y = rotate_flip(x, y, gen)
        with torch.no_grad():
            mu = model.predict_mean(x)
        value = loss(model, x, y, mu).mean()
        opt.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
    model.var_net = own
    tmp = cache.with_suffix(".tmp")
    torch.save({"spec": dataclasses.asdict(spec), "state": head.state_dict()}, tmp)
    tmp.replace(cache)
    return head.eval()


def maps(model, images: list[P.TestImage], mode: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(structure, std, error) per image in normalised units: one pass on the whole image
    (``whole``), in tiles (``tiles``), or μ(x) on the whole image and the head in tiles of
    [x, μ(x)] (``head-tiles``)."""
    def one_pass(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            r = model.sample(x, steps=20, samples=0, uncertainty="head", point_estimate="mean-net")
        return {"mean": r.mean, "var": r.std ** 2}

    c = model.out_channels

    def head(t: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"var": model.predict_std(t[:, :-c], t[:, -c:]) ** 2}

    out = []
    for im in images:
        x, y = im.pair.x, im.pair.y.numpy()
        if mode == "head-tiles":  # μ(x) once, on the whole image; only the head runs in tiles
            with torch.no_grad():
                mu = model.predict_mean(x[None])
                point = model.from_diffused(x[None], torch.zeros_like(mu), mu)
            var = apply_tiled(head, torch.cat([x, mu[0]]), tile=TILE, overlap=OVERLAP, batch=4)["var"]
            res = {"mean": point, "var": var}
        else:
            res = apply_tiled(one_pass, x, tile=TILE, overlap=OVERLAP, batch=4) if mode == "tiles" \
                else one_pass(x[None])
        mean, std = res["mean"].reshape(y.shape).numpy(), np.sqrt(res["var"].reshape(y.shape).numpy())
        out.append((im.structure, std[0], mean[0] - y[0]))
    return out


def scores(m: list, cal=None) -> dict:
    """±1σ coverage and RMSE / RMV pooled ('all') and per structure; with ``cal`` the std
    is mapped first and the bins' RMSE / RMV range is added."""
    out = {}
    for key in ["all", *dict.fromkeys(s for s, _, _ in m)]:
        sel = [(s, e) for k, s, e in m if key in ("all", k)]
        std = np.concatenate([s.ravel() for s, _ in sel]).astype(np.float64)
        err = np.concatenate([e.ravel() for _, e in sel]).astype(np.float64)
        if cal is not None:
            std = cal.apply(std)
        out[key] = (float(np.mean(np.abs(err) < std)), float(np.sqrt(np.sum(err ** 2) / np.sum(std ** 2))),
                    float(np.max(std)), float(np.max(np.abs(err))), float(np.sqrt(np.mean(err ** 2))))
        if key == "all" and cal is not None:
            rmv, scale, _ = calibration_bins(std, err)
            out["bins"] = (float(np.min(scale / rmv)), float(np.max(scale / rmv)))
    return out


def measure(method: str, seed: int, steps: int) -> dict:
    cfg = P.method_config(method, P.LONG_STEPS, seed)
    run = P.run_dir("long", method, seed)
    model = P.model_at(run, cfg, P.LONG_STEPS)
    trained = model.var_net
    heads = {"trained": trained}
    for norm in ("group", "pixel") if steps else ():
        heads[norm] = retrained_head(model, cfg, run, seed, norm, steps)
    real = [im for im in P.test_set(1) if im.group.startswith("real")]
    sets = {"val": P.validation_set(2), "test": P.test_set(2, real=False), "mixed": P.mixed_set(4, "test"),
            "real": real}
    res = {}
    for head, mode in [(h, m) for h, m in HEADS if h in heads]:
        model.var_net = heads[head]
        m = {name: maps(model, images, mode) for name, images in sets.items()}
        val = m["val"]
        cal = fit_std_calibration(np.concatenate([s.ravel() for _, s, _ in val]),
                                  np.concatenate([e.ravel() for _, _, e in val]))
        res[f"{head}/{mode}"] = {name: scores(v) for name, v in m.items()}
        res[f"{head}/{mode}"]["test-cal"] = scores(m["test"], cal)
    return res


def _cell(rows: list[dict], path: tuple, i: int, digits: int = 2) -> str:
    return P.mean_pm_std([r[path[0]][path[1]][i] for r in rows], digits)


def report(method: str, seeds: list[int], steps: int, results: dict[int, dict], seconds: float) -> str:
    structures = ["mt", "factin", "ccp", "er"]
    own = {"group": "GroupNorm", "pixel": "`norm: pixel`"}[
        P.method_config(method, P.LONG_STEPS, seeds[0]).model.zmd.variance_net.norm]
    label = {"trained/whole": f"jointly trained ({own}), whole image",
             "trained/tiles": f"jointly trained ({own}), {TILE}² tiles",
             "trained/head-tiles": f"jointly trained ({own}), μ(x) whole, head in {TILE}² tiles",
             "group/whole": f"retrained alone {steps} steps, GroupNorm, whole image",
             "pixel/whole": f"retrained alone {steps} steps, `norm: pixel`, whole image"}
    lines = [f"## The variance head's normalisation ({method}, 2000 steps; issue 18)", "",
             f"Command: `.venv/bin/python benchmarks/head_norm.py --method {method} --seeds "
             f"{' '.join(map(str, seeds))} --steps {steps}` ({seconds:.0f} s; {today()}; {machine()}).", "",
             "The same μ(x) of each run with versions of its σ(x): the run's own head (trained jointly, "
             f"{own}) on whole images, on {TILE}² tiles (overlap {OVERLAP}, blended; μ(x) then "
             "comes from the tiles too) and in tiles on [x, μ(x) of the whole image] (the point estimate "
             "kept whole), and, unless `--steps 0`, the head retrained alone against the "
             "run's final EMA μ(x) with GroupNorm (a control) and with `norm: pixel` (details: the "
             "script's docstring). Raw std unless said otherwise; mean ± std over seeds. Per structure: "
             "±1σ coverage / RMSE ÷ RMV (1: the std's scale is right on that structure's pixels).", ""]
    for name, title in (("val", "validation images (16)"), ("test", "test images (16)")):
        lines += [f"Raw std on the {title}:", "",
                  "| head | ±1σ pooled | RMSE / RMV pooled | " + " | ".join(structures) + " |",
                  "|---|---|---|" + "---|" * len(structures)]
        for key, text in label.items():
            if key not in results[seeds[0]]:
                continue
            rows = [results[s][key] for s in seeds]
            per = [f"{_cell(rows, (name, k), 0)} / {_cell(rows, (name, k), 1)}" for k in structures]
            lines.append(f"| {text} | {_cell(rows, (name, 'all'), 0)} | {_cell(rows, (name, 'all'), 1)} | "
                         + " | ".join(per) + " |")
        lines.append("")
    lines += ["Test images after the rms map fitted on the validation images (as `microdiff calibrate` "
              "fits it), and held-out mixed images (the training distribution; raw):", "",
              "| head | ±1σ pooled | per-structure ±1σ, largest distance | RMSE / RMV over the bins "
              "| mixed ±1σ | mixed RMSE / RMV | largest raw σ, validation (largest \\|error\\|) "
              "| μ(x) RMSE test / real |", "|---|---|---|---|---|---|---|---|"]
    for key, text in label.items():
        if key not in results[seeds[0]]:
            continue
        rows = [results[s][key] for s in seeds]
        dist = [max(abs(r["test-cal"][k][0] - r["test-cal"]["all"][0]) for k in structures) for r in rows]
        lo, hi = min(r["test-cal"]["bins"][0] for r in rows), max(r["test-cal"]["bins"][1] for r in rows)
        cells = [_cell(rows, ("test-cal", "all"), 0), P.mean_pm_std(dist), f"{lo:.2f} – {hi:.2f}",
                 _cell(rows, ("mixed", "all"), 0), _cell(rows, ("mixed", "all"), 1),
                 f"{max(r['val']['all'][2] for r in rows):.3g} ({max(r['val']['all'][3] for r in rows):.2f})",
                 f"{_cell(rows, ('test', 'all'), 4, 4)} / {_cell(rows, ('real', 'all'), 4, 4)}"]
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="zmd-scaled-var-any")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=1500, help="steps of the retrained heads (0: none)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results = {s: measure(args.method, s, args.steps) for s in args.seeds}
    body = report(args.method, args.seeds, args.steps, results, time.perf_counter() - t0)
    write_section(f"head_norm-{args.method}", body)
    print(body)


if __name__ == "__main__":
    main()
