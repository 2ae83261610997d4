import numpy as np
import pandas as pd

from lib.studies import eda


def toy_manifest(n=60, square_fakes=True, seed=0):
    rng = np.random.default_rng(seed)
    label = np.repeat([0, 1], n // 2)
    width = np.where((label == 1) & square_fakes, 64, 80) + rng.integers(0, 2, n) * 0
    return pd.DataFrame({
        "label": label, "width": width, "height": 64, "bytes": rng.integers(3000, 4000, n),
        "format": "PNG", "jpeg_quality": np.nan, "group": [f"g{i // 2}" for i in range(n)],
    })


def test_shortcut_probe_flags_geometry_and_not_noise():
    flagged = eda.shortcut_probe(toy_manifest(square_fakes=True), n_folds=5)
    assert flagged["flagged"] and flagged["auc_mean"] > 0.95
    assert flagged["importance"].index[0] in ("aspect", "width", "bytes_per_pixel")
    clean = eda.shortcut_probe(toy_manifest(square_fakes=False), n_folds=5)
    assert not clean["flagged"]


def test_metadata_features_do_not_modify_input():
    m = toy_manifest()
    before = m.copy()
    feats = eda.metadata_features(m)
    pd.testing.assert_frame_equal(m, before)
    assert (feats["jpeg_quality"] == -1).all() and "format_PNG" in feats


def test_near_duplicates_finds_identical_and_ignores_different():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    hashes = eda.perceptual_hashes([a, b, a.copy()], progress=False)
    pairs = eda.near_duplicates(hashes, max_distance=0)
    assert pairs[["i", "j"]].values.tolist() == [[0, 2]]
    m = pd.DataFrame({"group": ["x", "y", "z"], "source": ["real", "real", "fake"]})
    splits = pd.DataFrame({"split": ["trainval", "trainval", "test"], "fold": [0, 1, -1]})
    report = eda.duplicate_report(m, splits, pairs)
    assert bool(report.loc[0, "cross_group"]) and bool(report.loc[0, "cross_split"])


def test_near_duplicates_chunks_agree():
    hashes = np.random.default_rng(2).integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    hashes[10] = hashes[200]
    full = eda.near_duplicates(hashes, max_distance=3, chunk=4096)
    chunked = eda.near_duplicates(hashes, max_distance=3, chunk=7)
    pd.testing.assert_frame_equal(full.reset_index(drop=True), chunked.reset_index(drop=True))
    assert ((full["i"] == 10) & (full["j"] == 200)).any()


def test_colour_statistics():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    stats = eda.colour_statistics([red])
    assert stats.loc[0, "mean_r"] == 1.0 and stats.loc[0, "mean_g"] == 0.0 and stats.loc[0, "saturation"] == 1.0
