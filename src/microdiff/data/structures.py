"""Ground-truth fluorescence structures, one generator per BioSR class, on a fine grid.

Each generator returns a non-negative density ``[n, n]`` (float64) on a grid of pixel
size ``px`` µm, already convolved with the structure's own cross-section (a Gaussian of
the stated width), so the optics only need to add the microscope's blur.
Randomness only through the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import Voronoi

FWHM_TO_SIGMA = 1.0 / 2.3548


def _splat(img: np.ndarray, pts: np.ndarray, weight: float | np.ndarray) -> None:
    """Add points ``[k, 2]`` (row, col; pixel units) bilinearly to ``img``."""
    n0, n1 = img.shape
    i0 = np.floor(pts).astype(int)
    f = pts - i0
    w = np.broadcast_to(np.asarray(weight, float), (len(pts),))
    for di in (0, 1):
        for dj in (0, 1):
            wgt = w * (f[:, 0] if di else 1 - f[:, 0]) * (f[:, 1] if dj else 1 - f[:, 1])
            r, c = i0[:, 0] + di, i0[:, 1] + dj
            ok = (r >= 0) & (r < n0) & (c >= 0) & (c < n1)
            np.add.at(img, (r[ok], c[ok]), wgt[ok])


def _segment_points(a: np.ndarray, b: np.ndarray, spacing: float = 0.5) -> np.ndarray:
    k = max(int(np.ceil(np.linalg.norm(b - a) / spacing)), 1)
    s = np.linspace(0.0, 1.0, k + 1)[:, None]
    return a + s * (b - a)


MAX_EDGE_PER_SIZE = 10_000  # ER edges longer than this many image widths are clipped


def _clip_segment(a: np.ndarray, b: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The part of segment a→b inside the square [lo, hi]² (Liang–Barsky), or None."""
    d = b - a
    t0, t1 = 0.0, 1.0
    for p, q in ((-d[0], a[0] - lo), (d[0], hi - a[0]), (-d[1], a[1] - lo), (d[1], hi - a[1])):
        if p == 0:
            if q < 0:
                return None
            continue
        r = q / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
        if t0 > t1:
            return None
    return a + t0 * d, a + t1 * d


def _worm(rng: np.random.Generator, n: int, length: float, persistence: float,
          start: np.ndarray | None = None, theta: float | None = None) -> np.ndarray:
    """A worm-like chain (points every 0.5 px) of ``length`` px with persistence length
    ``persistence`` px: the tangent turns by N(0, 0.5/persistence) rad² per step."""
    steps = max(int(length / 0.5), 2)
    angle_sd = np.sqrt(0.5 / persistence)
    theta0 = rng.uniform(0, 2 * np.pi) if theta is None else theta
    angles = theta0 + np.cumsum(rng.normal(0, angle_sd, steps))
    start = rng.uniform(0, n, 2) if start is None else start
    return start + 0.5 * np.cumsum(np.stack([np.sin(angles), np.cos(angles)], 1), 0)


def _finish(img: np.ndarray, width_um: float, px: float) -> np.ndarray:
    return gaussian_filter(img, width_um * FWHM_TO_SIGMA / px, mode="constant")


def microtubules(rng: np.random.Generator, n: int, px: float, density: float) -> np.ndarray:
    """Long, smooth, persistent filaments (~25 nm wide) crossing the field.

    density: filaments per µm of field width (a 5 µm field at density 2 has ~10)."""
    img = np.zeros((n, n))
    count = max(1, rng.poisson(density * n * px))
    for _ in range(count):
        # in cells microtubules bend over a few µm (free ones are stiffer)
        pts = _worm(rng, n, length=rng.uniform(1.0, 3.0) * n, persistence=rng.uniform(3, 10) / px,
                    start=rng.uniform(-0.2 * n, 1.2 * n, 2))
        _splat(img, pts, rng.uniform(0.5, 1.0))
    return _finish(img, 0.025, px)


def factin(rng: np.random.Generator, n: int, px: float, density: float) -> np.ndarray:
    """Denser, thinner (~7 nm), straighter filaments: bundles of near-parallel filaments
    plus a cortical meshwork of short straight segments."""
    img = np.zeros((n, n))
    for _ in range(max(1, rng.poisson(density * n * px))):  # bundles
        theta, start = rng.uniform(0, 2 * np.pi), rng.uniform(-0.2 * n, 1.2 * n, 2)
        normal = np.array([np.cos(theta), -np.sin(theta)])
        length = rng.uniform(0.8, 2.0) * n
        for _ in range(rng.integers(1, 5)):
            offset = normal * rng.uniform(-0.05, 0.05) / px
            pts = _worm(rng, n, length, persistence=15.0 / px, start=start + offset, theta=theta)
            _splat(img, pts, rng.uniform(0.4, 0.9))
    area = (n * px) ** 2
    for _ in range(rng.poisson(density * 8 * area)):  # meshwork
        a = rng.uniform(0, n, 2)
        theta = rng.uniform(0, 2 * np.pi)
        b = a + rng.uniform(0.2, 0.8) / px * np.array([np.sin(theta), np.cos(theta)])
        _splat(img, _segment_points(a, b), rng.uniform(0.15, 0.4))
    return _finish(img, 0.007, px)


def ccps(rng: np.random.Generator, n: int, px: float, density: float) -> np.ndarray:
    """Clathrin-coated pits: hollow rings and puncta 80–200 nm across, scattered.

    density: pits per µm²."""
    img = np.zeros((n, n))
    area = (n * px) ** 2
    for _ in range(max(1, rng.poisson(density * area))):
        centre = rng.uniform(0, n, 2)
        radius = rng.uniform(0.04, 0.10) / px
        brightness = rng.uniform(0.4, 1.0)
        if rng.random() < 0.7:  # ring
            k = max(int(2 * np.pi * radius / 0.5), 8)
            ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
            pts = centre + radius * np.stack([np.sin(ang), np.cos(ang)], 1)
            _splat(img, pts, brightness / k * 40)
        else:  # filled punctum
            pts = centre + rng.normal(0, radius / 2, (60, 2))
            _splat(img, pts, brightness * 40 / 60)
    return _finish(img, 0.02, px)


def er(rng: np.random.Generator, n: int, px: float, density: float) -> np.ndarray:
    """Endoplasmic reticulum: a polygonal tubular network with three-way junctions (the
    edges of a Voronoi diagram), tubules 50–90 nm wide, plus a few dim sheets.

    density: polygons per µm²."""
    img = np.zeros((n, n))
    area = (n * px) ** 2
    seeds = rng.uniform(-0.1 * n, 1.1 * n, (max(4, rng.poisson(density * area * 1.44)), 2))
    vor = Voronoi(seeds)
    v = vor.vertices
    for a, b in vor.ridge_vertices:
        if a < 0 or b < 0 or rng.random() < 0.15:  # open polygons here and there
            continue
        p, q, brightness = v[a], v[b], rng.uniform(0.4, 0.8)
        # Nearly collinear seeds can put a vertex 1e8 px away (a 7.5 GiB point list, seen in
        # training data); keep the visible part of such edges. Ordinary far edges (up to
        # ~1e6 px, 30 MB of points) are drawn as before, so simulated data stay bit-identical.
        if np.linalg.norm(q - p) > MAX_EDGE_PER_SIZE * n:
            clipped = _clip_segment(p, q, -2.0, n + 1.0)
            if clipped is None:
                continue
            p, q = clipped
        _splat(img, _segment_points(p, q), brightness)
    img = _finish(img, rng.uniform(0.05, 0.09), px)
    sheets = gaussian_filter(rng.normal(size=(n, n)), 0.25 / px)
    sheets = np.clip(sheets / (sheets.std() + 1e-12) - 2.0, 0, None)
    return img + 0.05 * sheets / (sheets.max() + 1e-12) * img.max()


GENERATORS = {"mt": microtubules, "factin": factin, "ccp": ccps, "er": er}
DEFAULT_DENSITY = {"mt": 1.5, "factin": 1.0, "ccp": 1.5, "er": 1.2}


def structure(kind: str, rng: np.random.Generator, n: int, px: float, density: float) -> np.ndarray:
    """Ground truth for ``kind`` in ``mt, factin, ccp, er, mixed, any`` (mixed: 2–3 classes
    in one image; any: a mixed image or, with equal probability, one class drawn uniformly)."""
    if kind == "any":
        kind = "mixed" if rng.random() < 0.5 else str(rng.choice(list(GENERATORS)))
    if kind == "mixed":
        kinds = rng.choice(list(GENERATORS), size=int(rng.integers(2, 4)), replace=False)
        out = np.zeros((n, n))
        for k in kinds:
            part = GENERATORS[k](rng, n, px, density * DEFAULT_DENSITY[k] * 0.6)
            out += rng.uniform(0.5, 1.0) * part / (part.max() + 1e-12)
        return out
    if kind not in GENERATORS:
        kinds = ", ".join([*GENERATORS, "mixed", "any"])
        raise ValueError(f"unknown structure {kind!r}; choose one of {kinds}")
    return GENERATORS[kind](rng, n, px, density * DEFAULT_DENSITY[kind])
