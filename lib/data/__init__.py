"""Data: dataset folder -> manifest -> split table -> preprocessed tensor cache (the bottom layer)."""

from lib.data.augment import AugmentPolicy
from lib.data.cache import BatchLoader, build_cache, channel_stats
from lib.data.dataset import Dataset, load_dataset
from lib.data.layouts import LAYOUTS, LayoutError, detect_layout, read_layout
from lib.data.manifest import ManifestError, build_manifest, build_manifest_tables, manifest_fingerprint
from lib.data.recipes import Recipe
from lib.data.splits import SplitError, SplitWarning, fold_ids, make_splits, part_indices
