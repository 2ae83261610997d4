"""One call from a dataset folder (or the embedded dataset) to a ready manifest: ``load_dataset``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lib.data.duplicates import empty_merges
from lib.data.layouts import detect_layout
from lib.data.manifest import NEAR_DUPLICATE_DISTANCE, build_manifest_tables, manifest_fingerprint


@dataclass
class Dataset:
    name: str
    root: Path
    layout: str
    manifest: pd.DataFrame
    skipped: pd.DataFrame          # (path, reason) of every file left out
    fingerprint: str               # stable hash of the manifest's sha256, label, source, group columns
    card: dict | None              # the embedded dataset's card.json (or any card.json at the root)
    merges: pd.DataFrame = field(default_factory=empty_merges)   # group merges (lib.data.duplicates.MERGE_COLUMNS)

    def __repr__(self) -> str:
        counts = self.manifest["label"].value_counts().to_dict()
        return (f"Dataset({self.name!r}, layout={self.layout!r}, {len(self.manifest)} images "
                f"({counts.get(0, 0)} real, {counts.get(1, 0)} fake), {len(self.skipped)} skipped, "
                f"{len(self.merges)} group merge(s), fingerprint={self.fingerprint})")


def load_dataset(data_root: str = "", layout: str = "auto", embedded_preset: str = "default", seed: int = 42,
                 embedded_overrides: dict | None = None, progress: bool = True, group_regex: str = "",
                 merge_near_duplicates: bool = True,
                 near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE, allow_one_class: bool = False) -> Dataset:
    """Manifest of ``data_root`` read as ``layout``; ``data_root=""`` builds (once) and uses the embedded dataset.

    ``embedded_preset``, ``seed`` and ``embedded_overrides`` only matter for the embedded dataset. ``group_regex``
    overrides the layout's groups (``lib.data.layouts``); groups sharing near-duplicate images (perceptual hashes
    within ``near_duplicate_distance`` bits) are merged unless ``merge_near_duplicates=False`` (``Dataset.merges``
    lists the merges). ``allow_one_class=True`` accepts a folder of one class (evaluation only, e.g.
    ``layout="real_only"``); by default a one-class folder raises ``lib.data.manifest.ManifestError``.
    """
    if data_root:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data_root {data_root!r} is not a folder; pass \"\" for the embedded dataset")
    else:
        from lib.data.embedded import build_embedded  # lazy: building it pulls in torch and the generators

        root = Path(build_embedded(embedded_preset, seed=seed, progress=progress, **(embedded_overrides or {})))
    root = root.resolve()
    layout = detect_layout(root) if layout == "auto" else layout
    tables = build_manifest_tables(root, layout=layout, progress=progress, group_regex=group_regex,
                                   merge_near_duplicates=merge_near_duplicates,
                                   near_duplicate_distance=near_duplicate_distance, allow_one_class=allow_one_class)
    card_path = root / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else None
    name = str(card.get("name", root.name)) if isinstance(card, dict) else root.name
    return Dataset(name=name, root=root, layout=layout, manifest=tables.manifest, skipped=tables.skipped,
                   fingerprint=manifest_fingerprint(tables.manifest), card=card, merges=tables.merges)
