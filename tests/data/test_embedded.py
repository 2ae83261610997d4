"""Tests of the embedded dataset builder, on the smoke preset (each build takes a few seconds)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lib.data import embedded
from lib.data.embedded import (AE_SOURCES, FAKE_SOURCES, GREYSCALE, PHOTO_SOURCES, PHOTOS, PRESETS, build_embedded,
                               load_card, resolve_params)
from lib.fileio import sha256_file


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = build_embedded("smoke", out_dir=tmp_path_factory.mktemp("emb") / "smoke", progress=False)
    return root, pd.read_csv(root / "metadata.csv"), load_card(root)


def _sizes(root, paths):
    out = []
    for p in paths:
        with Image.open(root / p) as im:
            out.append((im.width, im.height, im.format))
    return out


def test_sources_labels_groups(smoke):
    root, meta, _ = smoke
    assert list(meta.columns) == ["path", "label", "source", "group"]
    assert set(meta.source) == {"real", *FAKE_SOURCES}
    assert (meta.label == (meta.source != "real").astype(int)).all()
    photo_rows = meta[meta.source != "dcgan_faces"]
    assert set(photo_rows.group) == set(PHOTOS)  # motorcycle's two stereo views are one group
    faces = meta[meta.source == "dcgan_faces"]
    assert len(faces) == PRESETS["smoke"]["dcgan_count"] and faces.group.is_unique
    assert faces.group.str.fullmatch(r"dcgan_\d+").all()
    # balanced per photograph: as many reals as autoencoder-based fakes
    per = photo_rows.groupby(["group", "label"]).size().unstack()
    assert (per[0] == per[1]).all()
    assert all((root / p).is_file() for p in meta.path)
    assert meta.path.str.match(r"^(real/[a-z_]+|fake/[a-z_]+)/\d{4}\.png$").all()


def test_card_params_counts_checksums(smoke):
    root, meta, card = smoke
    assert card["params"] == resolve_params("smoke")
    assert card["counts"]["total"] == len(meta)
    assert card["counts"]["by_source"] == meta.source.value_counts().to_dict()
    assert set(card["files"]) == {*meta.path, "metadata.csv"}
    assert all(sha256_file(root / p) == h for p, h in card["files"].items())
    assert len(card["checksum"]) == 64 and card["build_seconds"] > 0
    assert {"torch", "numpy"} <= set(card["versions"])
    assert "calibration" not in card  # the card states what this build measured, no typed-in numbers
    assert [p["name"] for p in card["photos"]] == list(PHOTOS)
    assert {p["name"] for p in card["photos"] if p["greyscale"]} == GREYSCALE
    groups = card["counts"]["groups_by_source"]
    assert groups == meta.groupby("source")["group"].nunique().to_dict()
    assert groups["real"] == len(PHOTOS) == card["counts"]["groups"] - PRESETS["smoke"]["dcgan_count"]
    md = (root / "card.md").read_text()
    assert "geometry: ON" in md and "dcgan_faces" in md and card["checksum"] in md
    assert "| real | 0 | 38 | 19 |" in md and all(f"| {p} |" in md for p in PHOTOS) and "alibration" not in md


def test_greyscale_photographs_give_grey_reals_and_fakes(smoke):
    root, meta, _ = smoke
    photo_rows = meta[meta.source != "dcgan_faces"]
    for path, group in zip(photo_rows.path, photo_rows.group):
        with Image.open(root / path) as im:
            rgb = np.asarray(im.convert("RGB")).astype(int)
        equal = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        assert equal == (group in GREYSCALE), path


def test_fakes_of_a_photograph_are_dealt_to_the_four_sources():
    for preset in ("smoke", "default"):
        params = resolve_params(preset)
        counts = embedded.fake_counts(params)
        assert set(counts) == set(PHOTO_SOURCES)
        for photo in PHOTOS:
            per_source = [counts[s][photo] for s in PHOTO_SOURCES]
            assert sum(per_source) == params["fakes_per_photo"] and max(per_source) - min(per_source) <= 1
        totals = [sum(counts[s].values()) for s in PHOTO_SOURCES]
        assert max(totals) - min(totals) <= 1


def test_geometry_shortcut_on(smoke):
    root, meta, _ = smoke
    size = PRESETS["smoke"]["crop_size"]
    real = _sizes(root, meta.path[meta.label == 0])
    fake = _sizes(root, meta.path[meta.label == 1])
    assert {(w, h) for w, h, _ in real} == {(round(1.25 * size), size)}
    assert {(w, h) for w, h, _ in fake} == {(size, size)}
    assert {f for *_, f in real + fake} == {"PNG"}


def test_geometry_off_and_real_jpeg(tmp_path):
    root = build_embedded("smoke", out_dir=tmp_path / "sq", progress=False, geometry_shortcut=False, compression="real_jpeg")
    meta = pd.read_csv(root / "metadata.csv")
    real = _sizes(root, meta.path[meta.label == 0])
    fake = _sizes(root, meta.path[meta.label == 1])
    assert {(w, h) for w, h, _ in real + fake} == {(32, 32)}
    assert {f for *_, f in real} == {"JPEG"} and meta.path[meta.label == 0].str.endswith(".jpg").all()
    assert {f for *_, f in fake} == {"PNG"}
    card = load_card(root)
    assert card["params"]["compression"] == "real_jpeg" and card["params"]["geometry_shortcut"] is False
    assert "geometry: off" in (root / "card.md").read_text()


def test_same_seed_identical_different_seed_differs(smoke, tmp_path):
    _, meta, card = smoke
    threads = torch.get_num_threads()
    again = load_card(build_embedded("smoke", out_dir=tmp_path / "again", progress=False))
    assert torch.get_num_threads() == threads  # the build restores the caller's thread count
    assert again["files"] == card["files"] and again["checksum"] == card["checksum"]
    other = load_card(build_embedded("smoke", seed=7, out_dir=tmp_path / "seed7", progress=False))
    assert other["checksum"] != card["checksum"]
    shared = [p for p in meta.path if p in other["files"]]
    assert sum(other["files"][p] != card["files"][p] for p in shared) > 0.9 * len(shared)


def test_cache_reuses_complete_build(smoke):
    root, _, card = smoke
    before = {p: (root / p).stat().st_mtime_ns for p in [*card["files"], "card.json"]}
    start = time.perf_counter()
    assert build_embedded("smoke", out_dir=root, progress=False) == root
    assert time.perf_counter() - start < 1.0
    assert {p: (root / p).stat().st_mtime_ns for p in before} == before


def test_changed_params_or_damaged_build_is_rebuilt(tmp_path):
    root = build_embedded("smoke", out_dir=tmp_path / "d", progress=False, difficulty=0.0)
    first = load_card(root)
    (root / "fake/ae_nearest/0000.png").unlink()  # a damaged folder is not a complete build
    assert not embedded.is_complete(root, first["params"])
    rebuilt = load_card(build_embedded("smoke", out_dir=root, progress=False, difficulty=0.0))
    assert rebuilt["checksum"] == first["checksum"]
    harder = load_card(build_embedded("smoke", out_dir=root, progress=False, difficulty=0.9))
    assert harder["params"]["difficulty"] == 0.9 and harder["checksum"] != first["checksum"]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["d"]  # no temp folders left behind


def test_builders_side_by_side_build_once(tmp_path, monkeypatch):
    """Notebooks start side by side (run_all --jobs): the second waits on the lock and reuses the first's build."""
    import threading

    real_build, builds = embedded._build, []

    def slow_build(*args):
        builds.append(1)
        time.sleep(0.5)  # the second builder arrives meanwhile
        return real_build(*args)

    monkeypatch.setattr(embedded, "_build", slow_build)
    roots = []
    threads = [threading.Thread(target=lambda: roots.append(build_embedded("smoke", out_dir=tmp_path / "d",
                                                                           progress=False))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and roots == [tmp_path / "d"] * 2 and embedded.is_complete(tmp_path / "d")


def test_difficulty_fades_reconstruction_towards_crop():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    recon = rng.random((2, 8, 8, 3), dtype=np.float32)
    raw = embedded.blend(crops, recon, 0.0)
    assert np.array_equal(raw, np.round(recon * 255).astype(np.uint8))
    gap = [np.abs(embedded.blend(crops, recon, d).astype(int) - crops).mean() for d in (0.0, 0.5, 0.9)]
    assert gap[0] > gap[1] > gap[2] > 0
    mask = embedded.inpaint_masks(50, 32, (0.2, 0.5), rng)
    assert 0.15 < mask.mean(axis=(1, 2)).min() and mask.mean(axis=(1, 2)).max() < 0.55
    only_inside = embedded.blend(crops, recon, 0.0, mask[:2, :8, :8])
    assert np.array_equal(only_inside[mask[:2, :8, :8] == 0], crops[mask[:2, :8, :8] == 0])


def test_upsamplers_differ_only_in_decoder():
    shapes = {}
    for kind in AE_SOURCES:
        model = embedded.ConvAutoencoder(kind, width=8, latent=4)
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
        shapes[kind] = [tuple(p.shape) for p in model.encoder.parameters()]
    assert len({tuple(s) for s in shapes.values()}) == 1
    with pytest.raises(ValueError, match="ae_transposed"):
        embedded.ConvAutoencoder("ae_bicubic")


def test_missing_dcgan_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "dcgan_weights_path", lambda: tmp_path / "weights.tar")
    with pytest.raises(FileNotFoundError, match="gan-face-generate"):
        build_embedded("smoke", out_dir=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
    # a build without DCGAN faces does not need the weights
    root = build_embedded("smoke", out_dir=tmp_path / "nogan", progress=False, dcgan_count=0)
    assert "dcgan_faces" not in set(pd.read_csv(root / "metadata.csv").source)


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="unknown embedded preset"):
        resolve_params("huge")
    with pytest.raises(ValueError, match="crop_sise"):
        resolve_params("smoke", crop_sise=16)
    with pytest.raises(ValueError, match="difficulty"):
        resolve_params("smoke", difficulty=1.0)
    with pytest.raises(ValueError, match="compression"):
        resolve_params("smoke", compression="webp")


def test_default_folder_name_encodes_overrides_and_seed():
    assert embedded.embedded_name("default") == "default"
    named = embedded.embedded_name("smoke", 42, {"difficulty": 0.2})
    assert named.startswith("smoke-") and len(named) == len("smoke-") + 8
    assert embedded.embedded_name("smoke", 7).endswith("-seed7")


def test_autoencoders_trained_in_worker_processes_give_the_sequential_build(smoke, tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, "PARALLEL_MIN_STEPS", 0)  # the smoke preset is small enough to build sequentially
    card = load_card(build_embedded("smoke", out_dir=tmp_path / "parallel", progress=False))
    assert card["files"] == smoke[2]["files"] and card["checksum"] == smoke[2]["checksum"]
