"""The shared opening of every analysis notebook: one dataset, one split table, one training configuration.

Notebooks pass their papermill parameters here, so equal parameters give equal run keys and a run trained by
one notebook is loaded, not retrained, by the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lib.data.dataset import Dataset, load_dataset
from lib.data.manifest import NEAR_DUPLICATE_DISTANCE
from lib.data.recipes import Recipe
from lib.data.splits import make_splits
from lib.training.fit import TrainConfig
from lib.training.runstore import split_key


@dataclass
class Study:
    dataset: Dataset
    splits: pd.DataFrame

    @property
    def manifest(self) -> pd.DataFrame:
        return self.dataset.manifest

    @property
    def stamp(self) -> dict[str, str]:
        """What an artefact read by a later notebook must have been made from (`lib.fileio.read_stamped_json`)."""
        return {"dataset": self.dataset.fingerprint, "split_key": split_key(self.splits)}


def open_study(data_root: str = "", layout: str = "auto", embedded_preset: str = "default", seed: int = 42,
               n_folds: int = 5, test_ratio: float = 0.2, val_ratio: float = 0.1, subsample: float = 1.0,
               holdout_sources: tuple[str, ...] = (), embedded_overrides: dict | None = None,
               group_regex: str = "", merge_near_duplicates: bool = True,
               near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE, protocol: str = "cv",
               train_classes: tuple[str, ...] = ()) -> Study:
    """The dataset (``lib.data.dataset.load_dataset``) and its split table (``lib.data.splits.make_splits``;
    ``protocol`` "cv" or "own", ``train_classes`` the folders training is restricted to)."""
    ds = load_dataset(data_root, layout, embedded_preset, seed=seed, embedded_overrides=embedded_overrides,
                      group_regex=group_regex, merge_near_duplicates=merge_near_duplicates,
                      near_duplicate_distance=near_duplicate_distance)
    splits = make_splits(ds.manifest, n_folds=n_folds, test_ratio=test_ratio, val_ratio=val_ratio, seed=seed,
                         subsample=subsample, holdout_sources=tuple(holdout_sources), protocol=protocol,
                         train_classes=tuple(train_classes))
    return Study(ds, splits)


def train_config(epochs: int, batch_size: int, optimizer: str, lr: float, weight_decay: float, scheduler: str,
                 t_max: int, patience: int, seed: int, **extra) -> TrainConfig:
    """The study plan's training configuration from notebook parameters (extra: augment, normalization, ...)."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                       scheduler=scheduler, t_max=t_max, patience=patience, seed=seed, **extra)


def baseline_recipe(image_size: int, resize_mode: str = "resize") -> Recipe:
    """Phase 1's preprocessing: a plain square resize, no face crop (augmentation lives in the TrainConfig)."""
    return Recipe(size=image_size, mode=resize_mode)


def named_sources(manifest: pd.DataFrame, requested, data_root: str = "") -> tuple[list[str], str]:
    """The fake sources named in params that this dataset has, and a note about any that it lacks.

    The smoke and default params name the embedded dataset's sources. On the embedded dataset an unknown
    name is a typo and raises; on your own data (`data_root` set) unknown names are dropped, and the note
    says so, so that the notebook can fall back to its rule for an empty list and report it.
    """
    fakes = sorted(manifest.loc[manifest["label"] == 1, "source"].astype(str).unique())
    requested = [str(s) for s in requested]
    unknown = sorted(set(requested) - set(fakes))
    if not unknown:
        return requested, ""
    if not data_root:
        raise ValueError(f"sources {unknown} are not fake sources of this dataset; fake sources: {fakes}")
    kept = [s for s in requested if s in fakes]
    return kept, f"params name sources this dataset lacks ({', '.join(unknown)}); used {kept or 'the default rule'} instead."
