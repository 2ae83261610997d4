import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lib.data.cache import IMAGENET_MEAN, IMAGENET_STD, BatchLoader, build_cache, cache_key, cache_paths, channel_stats
from lib.fileio import sha256_file
from lib.data.recipes import Recipe


def make_manifest(folder, n=12, seed=0, sizes=((12, 16), (16, 16))):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        rows.append({"path": path.as_posix(), "label": i % 2, "source": "fake" if i % 2 else "real",
                     "group": f"g{i // 2}", "sha256": sha256_file(path)})
    return pd.DataFrame(rows)


def test_cache_holds_the_recipe_output_in_manifest_order(tmp_path):
    manifest = make_manifest(tmp_path)
    recipe = Recipe(size=8)
    arr = build_cache(manifest, recipe, cache_dir=tmp_path / "cache", progress=False)
    assert arr.shape == (12, 3, 8, 8) and arr.dtype == np.uint8
    for i in (0, 5, 11):
        expected = recipe.apply(np.asarray(Image.open(manifest.path[i]).convert("RGB")), 0).transpose(2, 0, 1)
        np.testing.assert_array_equal(arr[i], expected)
    npy, meta = cache_paths(cache_key(manifest, recipe), tmp_path / "cache")
    assert npy.is_file() and json.loads(meta.read_text())["n_images"] == 12
    assert not list(npy.parent.glob("*.tmp*"))  # the temporary file was renamed away


def test_second_call_reopens_read_only_without_decoding(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path)
    first = build_cache(manifest, Recipe(size=8), cache_dir=tmp_path / "c", progress=False)

    def no_decoding(path):
        raise AssertionError("decoded again")

    again = build_cache(manifest, Recipe(size=8), cache_dir=tmp_path / "c", progress=False, loader=no_decoding)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError):
        again[0, 0, 0, 0] = 1  # read-only memmap


def test_key_depends_on_contents_order_recipe_and_boxes(tmp_path):
    manifest = make_manifest(tmp_path, n=4)
    base = cache_key(manifest, Recipe(size=8))
    assert cache_key(manifest.iloc[::-1].reset_index(drop=True), Recipe(size=8)) != base
    assert cache_key(manifest, Recipe(size=16)) != base
    boxes = np.tile([0.0, 0.0, 8.0, 8.0], (4, 1))
    face = Recipe(size=8, mode="face", face_detector="test")
    assert cache_key(manifest, face, boxes) != cache_key(manifest, face, boxes + 1)


def test_thread_pool_gives_identical_bytes(tmp_path):
    manifest = make_manifest(tmp_path)
    serial = build_cache(manifest, Recipe(size=8), cache_dir=tmp_path / "a", progress=False)
    threaded = build_cache(manifest, Recipe(size=8), cache_dir=tmp_path / "b", progress=False, workers=2)
    np.testing.assert_array_equal(serial, threaded)


def test_failures_name_the_file_and_leave_no_cache(tmp_path):
    manifest = make_manifest(tmp_path, n=3)
    manifest.loc[1, "path"] = (tmp_path / "missing.png").as_posix()
    with pytest.raises(RuntimeError, match="missing.png"):
        build_cache(manifest, Recipe(size=8), cache_dir=tmp_path / "c", progress=False)
    assert not list((tmp_path / "c" / "tensors").glob("*"))
    with pytest.raises(ValueError, match="face boxes"):
        build_cache(manifest, Recipe(mode="face", face_detector="x"), cache_dir=tmp_path / "c", progress=False)


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    idx = np.array([7, 1, 3])
    mean, std = channel_stats(images, idx, chunk=2)
    sub = images[idx].astype(np.float64) / 255
    np.testing.assert_allclose(mean, sub.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, sub.std(axis=(0, 2, 3)), rtol=1e-9)


@pytest.mark.parametrize("prefetch", [False, True])
def test_batch_loader_normalises_and_covers_every_index(prefetch):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    labels = np.arange(10) % 2
    idx = np.array([9, 0, 4, 2, 7])
    loader = BatchLoader(images, labels, idx, batch_size=2, shuffle=False, prefetch=prefetch)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    expected = (images[idx] / 255.0 - np.array(IMAGENET_MEAN).reshape(1, 3, 1, 1)) / np.array(IMAGENET_STD).reshape(1, 3, 1, 1)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), labels[idx])

    shuffled = BatchLoader(images, labels, idx, batch_size=2, shuffle=True, seed=3, drop_last=True, prefetch=prefetch)
    shuffled_batches = list(shuffled)
    assert len(shuffled) == len(shuffled_batches) == 2  # the partial last batch is dropped
    assert all(x.shape == (2, 3, 4, 4) for x, _ in shuffled_batches)


def test_shuffle_changes_each_pass_and_is_reproducible():
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1).repeat(3, 1)

    def batches(loader):  # image ids per batch (pixel value = row number)
        return [tuple(int(v) for v in x[:, 0, 0, 0]) for x, _ in loader]

    def make():
        return BatchLoader(images, None, np.arange(20), batch_size=5, shuffle=True, seed=5, mean=(0, 0, 0), std=(1 / 255,) * 3)

    a = make()
    first, second = batches(a), batches(a)
    assert sorted(v for b in first for v in b) == list(range(20))
    assert all(list(b) == sorted(b) for b in first)  # sorted inside a batch for contiguous reads
    assert first != second  # a new permutation every pass
    assert batches(make()) == first  # same seed, same passes


def test_early_break_stops_the_prefetch_thread():
    import threading

    images = np.zeros((64, 3, 4, 4), np.uint8)
    before = threading.active_count()
    for _ in BatchLoader(images, None, np.arange(64), batch_size=2, prefetch=True):
        break
    assert threading.active_count() == before
