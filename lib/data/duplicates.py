"""Duplicates: perceptual hashes, near-duplicate pairs, and the merging of groups that share an image.

``phash`` is imagehash's 64-bit DCT hash (greyscale 32x32, the 8x8 lowest frequencies against their median), held
as ``uint64`` (the manifest stores 16 hex digits). ``near_pairs`` finds every pair of hashes within ``max_distance``
bits without comparing all pairs when there are many: two hashes that differ in at most d bits agree exactly on at
least one of d + 1 disjoint bit blocks (pigeonhole), so only hashes that share a block are compared.
``merge_groups`` joins the groups linked by byte-identical files or near-duplicate images (connected components; a
merged group takes the smallest name among its members) and lists one linking image pair per merge.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

MERGE_COLUMNS = ["path_a", "path_b", "group_a", "group_b", "distance", "kind", "new_group"]
BYTES, PERCEPTUAL = "identical bytes", "perceptual hash"
_BRUTE_FORCE_MAX = 4096   # up to this many distinct hashes, comparing all pairs is fastest


# --- hashes ---------------------------------------------------------------------------------------------------

def phash(pixels: np.ndarray) -> int:
    """64-bit perceptual hash (imagehash.phash) of an (H, W, 3) uint8 image, as an int in [0, 2**64)."""
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(pixels)).hash.flatten()
    return int(np.packbits(bits).view(">u8")[0])


def perceptual_hashes(images: Iterable[np.ndarray]) -> np.ndarray:
    """``phash`` of every image, as uint64."""
    return np.asarray([phash(img) for img in images], dtype=np.uint64)


def to_hex(value: int) -> str:
    return f"{int(value):016x}"


def from_hex(values: Iterable[str]) -> np.ndarray:
    """uint64 hashes from their 16-digit hex strings."""
    return np.asarray([int(v, 16) for v in values], dtype=np.uint64)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):   # numpy >= 2.0
        return np.bitwise_count(x).astype(np.int64)
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(axis=-1).astype(np.int64)


# --- pairs ----------------------------------------------------------------------------------------------------

def _check_distance(max_distance: int) -> None:
    if not 0 <= int(max_distance) < 64:
        raise ValueError(f"max_distance must be in 0..63 bits, got {max_distance}")


def _pairs_brute_force(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), a < b: every pair of ``values`` within ``max_distance`` bits, by comparing all pairs (chunked)."""
    n = len(values)
    chunk = max(1, 2**22 // max(n, 1))
    left, right = [], []
    for start in range(0, n, chunk):
        block = values[start:start + chunk]
        close = popcount64(block[:, None] ^ values[None, :]) <= max_distance
        a, b = np.nonzero(close)
        a = a + start
        keep = a < b
        left.append(a[keep])
        right.append(b[keep])
    if not left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(left).astype(np.int64), np.concatenate(right).astype(np.int64)


def _pairs_within_runs(order: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of positions of ``order`` whose ``keys`` (sorted by ``order``) are equal, vectorised."""
    sorted_keys = keys[order]
    n = len(order)
    run_start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    run_end = np.r_[run_start[1:], n]
    end_of = np.repeat(run_end, run_end - run_start)          # run end of every sorted position
    partners = end_of - np.arange(n) - 1                        # later members of the same run
    total = int(partners.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.repeat(np.arange(n), partners)
    offset = np.arange(total) - np.repeat(np.cumsum(partners) - partners, partners)
    a, b = order[first], order[first + 1 + offset]
    return np.minimum(a, b), np.maximum(a, b)


def _pairs_multi_index(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Same result as ``_pairs_brute_force``: candidates share one of ``max_distance + 1`` bit blocks exactly."""
    n_blocks = max_distance + 1
    edges = np.linspace(0, 64, n_blocks + 1).round().astype(int)
    left, right = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        keys = (values >> np.uint64(lo)) & np.uint64((1 << int(hi - lo)) - 1)
        a, b = _pairs_within_runs(np.argsort(keys, kind="stable"), keys)
        left.append(a)
        right.append(b)
    code = np.sort(np.concatenate(left) * len(values) + np.concatenate(right))   # sort, not np.unique: faster here
    code = code[np.r_[True, code[1:] != code[:-1]]] if len(code) else code
    a, b = code // len(values), code % len(values)
    keep = popcount64(values[a] ^ values[b]) <= max_distance
    return a[keep], b[keep]


def _value_pairs(values: np.ndarray, max_distance: int, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b), a < b, of distinct ``values`` within ``max_distance`` bits, sorted."""
    if method == "auto":   # blocks of fewer than 10 bits would make the candidate lists too long
        method = "brute" if len(values) <= _BRUTE_FORCE_MAX or 64 // (max_distance + 1) < 10 else "blocks"
    a, b = (_pairs_brute_force if method == "brute" else _pairs_multi_index)(values, max_distance)
    order = np.lexsort((b, a))
    return a[order], b[order]


def _members(inverse: np.ndarray, n_values: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, start): the items holding value v are ``order[start[v]:start[v + 1]]``, in increasing order."""
    order = np.argsort(inverse, kind="stable")
    start = np.r_[0, np.cumsum(np.bincount(inverse, minlength=n_values))]
    return order, start


def near_pairs(hashes: np.ndarray, max_distance: int = 4, method: str = "auto") -> pd.DataFrame:
    """Every pair (i < j) of items whose hashes differ in at most ``max_distance`` bits: columns i, j, distance."""
    _check_distance(max_distance)
    hashes = np.asarray(hashes, dtype=np.uint64)
    values, inverse = np.unique(hashes, return_inverse=True)
    inverse = inverse.ravel()
    same_i, same_j = _pairs_within_runs(np.argsort(inverse, kind="stable"), inverse)   # identical hashes
    va, vb = _value_pairs(values, max_distance, method)
    order, start = _members(inverse, len(values))
    counts = np.diff(start)
    per_pair = counts[va] * counts[vb]                            # every item of one value x every item of the other
    pair = np.repeat(np.arange(len(va)), per_pair)
    local = np.arange(int(per_pair.sum())) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    i = order[start[va][pair] + local // counts[vb][pair]]
    j = order[start[vb][pair] + local % counts[vb][pair]]
    out = pd.DataFrame({"i": np.r_[same_i, np.minimum(i, j)], "j": np.r_[same_j, np.maximum(i, j)],
                        "distance": np.r_[np.zeros(len(same_i), np.int64), popcount64(hashes[i] ^ hashes[j])]})
    return out.astype("int64").sort_values(["i", "j"], ignore_index=True)


# --- merging groups -------------------------------------------------------------------------------------------

def _link_edges(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges chaining the items that share a code (each item to the next one with the same code)."""
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]
    return order[:-1][same], order[1:][same]


def merge_groups(manifest: pd.DataFrame, hashes: np.ndarray | None = None,
                 max_distance: int = 4) -> tuple[np.ndarray, pd.DataFrame]:
    """(new group of every row, merges table): groups linked by identical ``sha256`` and, when ``hashes`` is given,
    by perceptual hashes within ``max_distance`` bits, are merged into one.

    The merges table (``MERGE_COLUMNS``) has one row per union: the image pair that linked two groups (identical
    bytes first, then the closest pairs), both groups as they were, and the merged group's name.
    """
    groups = manifest["group"].astype(str).to_numpy()
    paths = manifest["path"].astype(str).to_numpy()
    group_codes, names = pd.factorize(pd.Series(groups))
    edges = []   # (i, j, distance, kind)
    a, b = _link_edges(pd.factorize(manifest["sha256"])[0])
    edges.append((a, b, np.zeros(len(a), np.int64), BYTES))
    if hashes is not None:
        _check_distance(max_distance)
        hashes = np.asarray(hashes, dtype=np.uint64)
        values, inverse = np.unique(hashes, return_inverse=True)
        inverse = inverse.ravel()
        a, b = _link_edges(inverse)
        edges.append((a, b, np.zeros(len(a), np.int64), PERCEPTUAL))
        va, vb = _value_pairs(values, max_distance)
        order, start = _members(inverse, len(values))
        a, b = order[start[va]], order[start[vb]]              # one image of each value stands for all of them
        edges.append((a, b, popcount64(values[va] ^ values[vb]), PERCEPTUAL))

    parent = np.arange(len(names))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    rows = []
    for a, b, dist, kind in edges:
        across = group_codes[a] != group_codes[b]
        a, b, dist = np.minimum(a, b)[across], np.maximum(a, b)[across], dist[across]
        for k in np.lexsort((b, a, dist)):                          # closest pairs first
            ra, rb = find(group_codes[a[k]]), find(group_codes[b[k]])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
                rows.append((paths[a[k]], paths[b[k]], groups[a[k]], groups[b[k]], int(dist[k]), kind))
    roots = np.array([find(c) for c in range(len(names))], dtype=np.int64)
    merged_name = pd.Series(np.asarray(names, dtype=object)).groupby(roots).transform("min").to_numpy()
    new_groups = merged_name[group_codes].astype(str)
    merges = pd.DataFrame(rows, columns=MERGE_COLUMNS[:-1])
    merges["new_group"] = [merged_name[c] for c in pd.Index(names).get_indexer(merges["group_a"])]
    return new_groups, merges.astype({"path_a": str, "path_b": str, "group_a": str, "group_b": str,
                                      "distance": "int64", "kind": str, "new_group": str})


def empty_merges() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "distance" else str) for c in MERGE_COLUMNS})
