"""Every params file matches its notebook, and the notebooks of one profile share one dataset and split table."""

import pytest

from lib.config import PROFILES, declared_parameters, notebook_overrides, resolve_parameters
from lib.paths import NOTEBOOKS_DIR, PARAMS_DIR
from run_all import numbered_notebooks

SPLIT_KEYS = ("data_root", "layout", "embedded_preset", "seed", "n_folds", "test_ratio", "val_ratio", "group_regex",
              "protocol", "train_classes")
# Equal baseline training keys give equal run keys, so later notebooks reuse Phase 1 runs instead of retraining.
TRAIN_KEYS = ("image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "scheduler", "t_max", "patience")


@pytest.mark.parametrize("profile", PROFILES)
def test_params_files_resolve(profile):
    for nb in numbered_notebooks():
        resolve_parameters(nb, profile)  # raises on unknown keys or wrong types


def test_no_orphan_params_files():
    stems = {nb.stem for nb in numbered_notebooks()}
    for profile in PROFILES:
        for f in (PARAMS_DIR / profile).glob("*.yaml"):
            assert f.stem in stems, f"{f} configures no notebook"


@pytest.mark.parametrize("profile", PROFILES)
def test_split_and_training_keys_agree_within_profile(profile):
    seen = {}
    for nb in numbered_notebooks():
        values = resolve_parameters(nb, profile)
        for key in SPLIT_KEYS + TRAIN_KEYS:
            if key in values:
                seen.setdefault(key, {})[nb.stem] = values[key]
    for key, per_nb in seen.items():
        assert len(set(map(repr, per_nb.values()))) == 1, f"{profile}: {key} differs between notebooks: {per_nb}"


def test_notebooks_are_stripped_and_parameterised():
    import nbformat

    for nb_path in numbered_notebooks():
        nb = nbformat.read(nb_path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), f"{nb_path.name}: no parameters cell"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{nb_path.name}: outputs committed"
        assert "profile" in declared_parameters(nb_path)
