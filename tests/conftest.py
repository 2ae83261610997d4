"""Shared fixtures: tiny image files and dataset trees built on the fly in tmp_path (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.fileio import sha256_file


def noise_pixels(key: str, size: tuple[int, int] = (16, 16), channels: int = 3) -> np.ndarray:
    """Deterministic uint8 noise seeded by ``key``: every test file gets distinct bytes (no accidental duplicates)."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    width, height = size
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image(path: str | Path, size: tuple[int, int] = (16, 16), fmt: str | None = None, **save_kw) -> Path:
    """Write a small RGB noise image; the format follows the suffix unless ``fmt`` is given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise_pixels(path.as_posix(), size)).save(path, format=fmt, **save_kw)
    return path


def patch_png_size(path: str | Path, width: int, height: int) -> Path:
    """Rewrite a PNG's IHDR width/height (and its CRC): the header then claims a size the data does not have."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    # signature (8) + chunk length (4) + b"IHDR" (4) -> width, height start at byte 16
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF   # over chunk type + 13 data bytes
    data[29:33] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def image_factory(tmp_path: Path) -> Callable[..., Path]:
    """``make(relative_path, size=(16, 16), fmt=None, **save_kw) -> Path`` under tmp_path."""
    def make(relative: str, size: tuple[int, int] = (16, 16), fmt: str | None = None, **save_kw) -> Path:
        return write_image(tmp_path / relative, size, fmt, **save_kw)
    return make


@pytest.fixture
def odd_files(tmp_path: Path) -> dict[str, Path]:
    """One file per awkward case the loader must convert or reject, keyed by a short name."""
    root = tmp_path / "odd"
    root.mkdir()
    files: dict[str, Path] = {}

    files["not_an_image"] = root / "notes.jpg"
    files["not_an_image"].write_text("this is a text file with an image extension\n")

    good = write_image(root / "full.jpg", (64, 64), quality=90)
    files["truncated_jpeg"] = root / "truncated.jpg"
    files["truncated_jpeg"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    files["cmyk_white"] = root / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(files["cmyk_white"], quality=95)

    files["grey16"] = root / "grey16.png"
    grey16 = np.full((16, 16), 65535, dtype=np.uint16)
    grey16[:, :8] = 0
    grey16[0, 0] = 257 * 128
    Image.fromarray(grey16).save(files["grey16"])

    files["palette_transparent"] = root / "palette.png"
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))   # index 0 red, index 1 blue
    palette.paste(1, (0, 0, 8, 16))
    palette.save(files["palette_transparent"], transparency=0)          # red is fully transparent

    files["rgba"] = root / "rgba.png"
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 200                  # red channel everywhere
    rgba[:, :8, 3] = 255                # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(files["rgba"])

    files["grey"] = root / "grey.png"
    Image.fromarray(np.full((16, 16), 77, dtype=np.uint8), "L").save(files["grey"])

    files["tiny"] = root / "tiny.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(files["tiny"])

    files["huge_header"] = patch_png_size(write_image(root / "huge.png", (16, 16)), 100_000, 100_000)
    return files


# --- dataset trees ------------------------------------------------------------------------------------------

@pytest.fixture
def generic_tree(tmp_path: Path) -> Path:
    """``<split>/{real,fake}`` with a generator sub-folder under fake and a stray non-image file."""
    root = tmp_path / "generic"
    for split in ("train", "test"):
        for i in range(4):
            write_image(root / split / "real" / f"img{i}.png")
            write_image(root / split / "fake" / ("gen_a" if i % 2 else "gen_b") / f"img{i}.png")
    (root / "train" / "README.txt").write_text("not an image")
    return root


@pytest.fixture
def cifake_tree(tmp_path: Path) -> Path:
    root = tmp_path / "cifake"
    for split in ("train", "test"):
        for cls in ("REAL", "FAKE"):
            for i in range(3):
                write_image(root / split / cls / f"{i} (2).jpg", (32, 32))
                write_image(root / split / cls / f"{i}.jpg", (32, 32))
    return root


@pytest.fixture
def forensynths_tree(tmp_path: Path) -> Path:
    """ProGAN train set (classes directly under the split) plus a test set with and without class folders."""
    root = tmp_path / "forensynths"
    for cls in ("airplane", "cat"):
        for label in ("0_real", "1_fake"):
            for i in range(3):
                write_image(root / "train" / cls / label / f"{i:05d}.png")
    for gen, classes in (("stylegan", ("car", "cat")), ("biggan", (None,))):
        for cls in classes:
            for label in ("0_real", "1_fake"):
                for i in range(3):
                    parts = [gen] + ([cls] if cls else []) + [label, f"{i:05d}.png"]
                    write_image(root.joinpath("test", *parts))
    return root


@pytest.fixture
def deepfakeface_tree(tmp_path: Path) -> Path:
    root = tmp_path / "dff"
    for folder, ext in (("wiki", ".jpg"), ("inpainting", ".png"), ("insight", ".jpg"), ("text2img", ".png")):
        for sub in ("00", "01"):
            for i in range(3):
                write_image(root / folder / sub / f"{sub}_{i}{ext}")
    return root


@pytest.fixture
def embedded_tree(tmp_path: Path) -> Path:
    """A folder in the embedded dataset's format: images + metadata.csv + card.json."""
    import json

    root = tmp_path / "embedded_tiny"
    rows = []
    for photo in ("astronaut", "chelsea", "coffee", "rocket"):
        for crop in range(3):
            rel = f"real/{photo}_{crop}.png"
            write_image(root / rel)
            rows.append({"path": rel, "label": 0, "source": "real", "group": photo})
            for source in ("ae_nearest", "inpaint"):
                rel = f"fake/{source}/{photo}_{crop}.png"
                write_image(root / rel)
                rows.append({"path": rel, "label": 1, "source": source, "group": photo})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    (root / "card.json").write_text(json.dumps({"name": "embedded_tiny", "preset": "test"}))
    return root


@pytest.fixture(scope="session")
def smoke_reports():
    """Execute every numbered notebook once on the smoke profile; tests read what they saved."""
    import run_all
    from lib.paths import report_dir

    code = run_all.main(["--profile", "smoke"])
    out = report_dir("smoke")
    assert code == 0, f"smoke run failed; see {out}/run_log.json"
    return out


# ----------------------------------------------------------------------------- tiny studies for the run store
def tiny_run_study(tmp_path: Path, images: list[np.ndarray], sources: list[str], parts: list[tuple[str, int]],
                   fingerprint: str, **columns) -> SimpleNamespace:
    """A study of PNGs for run-store tests: image i has label i % 2 and group g{i // 2}; `parts` deals the rows in
    order ((split, count) pairs), the trainval rows into 2 folds by group. `columns` are constant manifest columns."""
    rows = []
    for i, img in enumerate(images):
        path = tmp_path / "img" / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(path)
        rows.append({"path": path.as_posix(), "label": i % 2, "source": sources[i], "group": f"g{i // 2}",
                     "sha256": sha256_file(path), **columns})
    manifest = pd.DataFrame(rows)
    split = [name for name, count in parts for _ in range(count)]
    fold = [(i // 2) % 2 if name == "trainval" else -1 for i, name in enumerate(split)]
    splits = pd.DataFrame({"sha256": manifest["sha256"], "split": split, "fold": fold})
    dataset = SimpleNamespace(name="tiny", manifest=manifest, fingerprint=fingerprint)
    return SimpleNamespace(dataset=dataset, splits=splits, runs=tmp_path / "runs", cache=tmp_path / "cache")


@pytest.fixture
def study(tmp_path):
    """20 PNGs (fakes brighter), a hand-made split table: 2 folds, 4 test rows, 2 holdout rows."""
    rng = np.random.default_rng(0)
    images = [(rng.integers(0, 150, (16, 20, 3)) + 100 * (i % 2)).clip(0, 255).astype(np.uint8) for i in range(20)]
    sources = ["gen" if i % 2 else "real" for i in range(20)]
    return tiny_run_study(tmp_path, images, sources, [("trainval", 14), ("test", 4), ("holdout", 2)], "fp-tiny")
