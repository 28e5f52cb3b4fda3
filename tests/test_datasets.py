"""Paired data: folders, BioSR cells, splits by file, aligned and filtered patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microdiff.data.datasets import (
    biosr_cells,
    make_pair,
    paired_folder,
    random_patches,
    rotate_flip,
    simulated,
    split_by_name,
)
from microdiff.data.io import Image, write_image, write_mrc
from microdiff.data.simulate_files import write_simulated_pairs
from microdiff.errors import ShapeError, UserError


def _bin(a: torch.Tensor, s: int) -> torch.Tensor:
    c, h, w = a.shape
    return a.reshape(c, h // s, s, w // s, s).mean((2, 4))


def test_paired_folder_from_simulate(tmp_path) -> None:
    write_simulated_pairs(tmp_path, "mt", 3, 64, level=9, seed=0, progress=False)
    pairs = paired_folder(tmp_path)
    assert [p.name for p in pairs] == ["mt_00000", "mt_00001", "mt_00002"]
    for p in pairs:
        assert p.scale == 2 and p.low.shape == (1, 32, 32) and p.x.shape == p.y.shape == (1, 64, 64)


def test_paired_folder_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="input/ and target/"):
        paired_folder(tmp_path)
    (tmp_path / "input").mkdir()
    (tmp_path / "target").mkdir()
    write_image(tmp_path / "input" / "a.tif", Image(np.ones((8, 8), np.float32), "YX"))
    with pytest.raises(UserError, match="without a partner"):
        paired_folder(tmp_path)
    write_image(tmp_path / "target" / "a.tif", Image(np.ones((12, 12), np.float32), "YX"))
    with pytest.raises(ShapeError, match="integer multiple"):
        paired_folder(tmp_path)


def test_patches_stay_aligned_at_the_scale_factor() -> None:
    rng = np.random.default_rng(0)
    target = rng.random((1, 96, 96)).astype(np.float32)
    low = _bin(torch.from_numpy(target), 3).numpy() * 7 + 100  # another intensity scale
    pair = make_pair("p", low, target)
    x, y, lo = random_patches([pair], batch=6, patch=24, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 1, 24, 24) and lo.shape == (6, 1, 8, 8)
    for b in range(6):
        r = np.corrcoef(_bin(y[b], 3).ravel(), lo[b].ravel())[0, 1]
        assert r > 0.99999  # same content up to each image's own normalisation


def test_empty_patches_are_filtered() -> None:
    target = np.zeros((1, 64, 64), np.float32)
    target[0, :16, :16] = np.random.default_rng(0).random((16, 16))
    pair = make_pair("sparse", _bin(torch.from_numpy(target), 2).numpy(), target)
    gen = torch.Generator().manual_seed(0)
    _, y, _ = random_patches([pair], batch=8, patch=16, generator=gen, min_contrast=0.3, max_tries=50)
    contrast = (y.flatten(1).quantile(0.99, dim=1) - y.flatten(1).quantile(0.01, dim=1))
    assert torch.all(contrast > 0.1)
    _, y0, _ = random_patches([pair], batch=8, patch=16, generator=torch.Generator().manual_seed(0))
    assert (y0.flatten(1).std(1) == 0).any()  # unfiltered: some empty patches


def test_split_by_file_is_deterministic_and_disjoint() -> None:
    pairs = simulated("ccp", 7, 32, seed=1, level=5)
    train, val = split_by_name(pairs, 0.3, seed=0)
    train2, val2 = split_by_name(pairs, 0.3, seed=0)
    assert [p.name for p in val] == [p.name for p in val2]
    assert {p.name for p in train}.isdisjoint({p.name for p in val})
    assert len(train) + len(val) == 7 and len(val) == 2


def test_biosr_cells(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for cell in ("Cell_001", "Cell_002"):
        d = tmp_path / cell
        d.mkdir()
        raw = (rng.random((9, 16, 16)) * 100).astype(np.uint16)
        write_mrc(d / "RawSIMData_level_02.mrc", Image(raw, "ZYX"))
        write_mrc(d / "SIM_gt.mrc", Image((rng.random((1, 32, 32)) * 100).astype(np.uint16), "ZYX"))
    pairs = biosr_cells(tmp_path, level=2)
    assert [p.name for p in pairs] == ["Cell_001", "Cell_002"] and pairs[0].scale == 2
    write_mrc(tmp_path / "Cell_001" / "RawSIMData_level_05.mrc", Image(raw, "ZYX"))
    every = biosr_cells(tmp_path)  # every level of every cell, named after the cell
    assert [p.name for p in every] == ["Cell_001", "Cell_001", "Cell_002"]
    train, val = split_by_name(every, 0.5, seed=0)
    assert {p.name for p in train}.isdisjoint({p.name for p in val}) and len(train) + len(val) == 3
    with pytest.raises(UserError, match="no BioSR"):
        biosr_cells(tmp_path / "Cell_001" / "nothing", level=2)


def test_rotate_flip_moves_input_and_target_together() -> None:
    """The augmentation applies one dihedral transform to x and y: y stays aligned with x,
    all eight transforms occur, and a seeded generator repeats them."""
    x = torch.arange(2 * 16.0).view(2, 1, 4, 4)
    y = 10 * x + 1
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(64):
        xa, ya = rotate_flip(x, y, gen)
        torch.testing.assert_close(ya, 10 * xa + 1)
        seen.add(tuple(xa[0, 0].flatten().int().tolist()))
    assert len(seen) == 8
    a = rotate_flip(x, y, torch.Generator().manual_seed(5))
    b = rotate_flip(x, y, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0])


def test_pairs_are_named_by_the_whole_stem(tmp_path) -> None:
    """``cell_0.5um.tif`` and ``cell_0.7um.tif`` are two pairs (not one, cut at the first
    dot); two images of one name in a folder are refused, not one dropped."""
    for name in ("cell_0.5um.tif", "cell_0.7um.tif"):
        write_image(tmp_path / "input" / name, Image(np.ones((8, 8), np.float32), "YX"))
        write_image(tmp_path / "target" / name, Image(np.ones((16, 16), np.float32), "YX"))
    assert [p.name for p in paired_folder(tmp_path)] == ["cell_0.5um", "cell_0.7um"]
    write_image(tmp_path / "input" / "cell_0.5um.png", Image(np.ones((8, 8), np.uint8), "YX"))
    with pytest.raises(UserError, match="two images named 'cell_0.5um'"):
        paired_folder(tmp_path)
