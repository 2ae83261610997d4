"""The tiny study the run store's tests train on."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.fileio import sha256_file


@pytest.fixture
def study(tmp_path):
    """20 PNGs (fakes brighter), a hand-made split table: 2 folds, 4 test rows, 2 holdout rows."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        label = i % 2
        img = (rng.integers(0, 150, (16, 20, 3)) + 100 * label).clip(0, 255).astype(np.uint8)
        path = tmp_path / "img" / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(path)
        rows.append({"path": path.as_posix(), "label": label, "source": "gen" if label else "real",
                     "group": f"g{i // 2}", "sha256": sha256_file(path)})
    manifest = pd.DataFrame(rows)
    split = ["trainval"] * 14 + ["test"] * 4 + ["holdout"] * 2
    fold = [(i // 2) % 2 for i in range(14)] + [-1] * 6
    splits = pd.DataFrame({"sha256": manifest["sha256"], "split": split, "fold": fold})
    dataset = SimpleNamespace(name="tiny", manifest=manifest, fingerprint="fp-tiny")
    return SimpleNamespace(dataset=dataset, splits=splits, runs=tmp_path / "runs", cache=tmp_path / "cache")
