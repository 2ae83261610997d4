import time

import numpy as np
import pandas as pd
import pytest

from lib.data import duplicates as D


def _hashes_with_planted_pairs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    for k in range(0, n // 10):                    # near copies: flip 0..5 random bits of an earlier hash
        src, dst = rng.integers(0, n, 2)
        flips = rng.choice(64, size=rng.integers(0, 6), replace=False)
        hashes[dst] = hashes[src] ^ np.uint64(sum(1 << int(b) for b in flips))
    return hashes


def _all_pairs(hashes: np.ndarray, max_distance: int) -> set:
    """Reference: compare every pair."""
    out = set()
    for i in range(len(hashes)):
        d = D.popcount64(hashes[i] ^ hashes[i + 1:])
        out |= {(i, i + 1 + j, int(d[j])) for j in np.flatnonzero(d <= max_distance)}
    return out


@pytest.mark.parametrize("method", ["brute", "blocks"])
def test_near_pairs_finds_exactly_the_close_pairs(method):
    hashes = _hashes_with_planted_pairs(600, seed=1)
    hashes[[5, 17, 300]] = hashes[3]               # identical hashes (e.g. copies) count as distance 0
    for max_distance in (0, 2, 4, 5):
        pairs = D.near_pairs(hashes, max_distance, method=method)
        assert set(map(tuple, pairs[["i", "j", "distance"]].to_numpy().tolist())) == _all_pairs(hashes, max_distance)
        assert (pairs["i"] < pairs["j"]).all()
    assert {(3, 5), (3, 17), (5, 300)} <= set(map(tuple, D.near_pairs(hashes, 0)[["i", "j"]].to_numpy().tolist()))


def test_near_pairs_of_many_hashes_is_fast():
    hashes = _hashes_with_planted_pairs(100_000, seed=2)
    start = time.perf_counter()
    pairs = D.near_pairs(hashes, 4)
    assert time.perf_counter() - start < 10 and len(pairs) > 0
    assert (D.popcount64(hashes[pairs["i"]] ^ hashes[pairs["j"]]) == pairs["distance"]).all()


def test_phash_is_imagehash_packed_and_survives_small_changes():
    import imagehash
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    value = D.phash(img)
    assert D.to_hex(value) == str(imagehash.phash(Image.fromarray(img)))
    assert D.from_hex([D.to_hex(value)])[0] == np.uint64(value)
    brighter = np.clip(img.astype(int) + 4, 0, 255).astype(np.uint8)
    other = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    hashes = D.perceptual_hashes([img, brighter, other])
    assert D.popcount64(hashes[0] ^ hashes[1]) <= 2 < 10 < D.popcount64(hashes[0] ^ hashes[2])


def _manifest(groups, sha=None):
    n = len(groups)
    return pd.DataFrame({"path": [f"/d/{i}.png" for i in range(n)], "group": groups,
                         "sha256": sha or [f"h{i}" for i in range(n)]})


def test_merge_groups_joins_chains_and_reports_one_pair_per_merge():
    # rows 0-1 in group "b" and "c" are near copies, 2-3 link "c" and "d" by identical bytes; "a" stays alone;
    # 4-5 are near copies inside group "e" (no merge)
    m = _manifest(["b", "c", "c", "d", "e", "e", "a"], sha=["s0", "s1", "s2", "s2", "s4", "s5", "s6"])
    hashes = np.array([0xF, 0x7, 0xFF << 8, 0xFF << 20, 0xFF << 56, 0xFF << 56, 0xFFFF << 36], dtype=np.uint64)
    groups, merges = D.merge_groups(m, hashes, max_distance=2)
    assert groups.tolist() == ["b", "b", "b", "b", "e", "e", "a"]
    assert list(merges.columns) == D.MERGE_COLUMNS and len(merges) == 2
    assert merges[["group_a", "group_b", "distance", "kind", "new_group"]].values.tolist() == [
        ["c", "d", 0, D.BYTES, "b"], ["b", "c", 1, D.PERCEPTUAL, "b"]]
    only_bytes, merges = D.merge_groups(m)                       # near-duplicate merging off
    assert only_bytes.tolist() == ["b", "c", "c", "c", "e", "e", "a"] and merges["kind"].tolist() == [D.BYTES]


def test_merge_groups_without_anything_to_merge():
    m = _manifest(["x", "y"])
    groups, merges = D.merge_groups(m, np.array([0, 2**64 - 1], dtype=np.uint64))
    assert groups.tolist() == ["x", "y"] and merges.empty and list(merges.columns) == D.MERGE_COLUMNS
    with pytest.raises(ValueError, match="0..63"):
        D.near_pairs(np.zeros(2, np.uint64), max_distance=64)
