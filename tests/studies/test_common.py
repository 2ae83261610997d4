import pandas as pd
import pytest

from lib.studies.common import named_sources

MANIFEST = pd.DataFrame({"label": [0, 1, 1, 1], "source": ["real", "ae", "ae", "gan"]})


def test_named_sources_kept_when_present():
    assert named_sources(MANIFEST, ["gan"]) == (["gan"], "")


def test_unknown_source_is_a_typo_on_the_embedded_dataset():
    with pytest.raises(ValueError, match="inpaint"):
        named_sources(MANIFEST, ["inpaint"], data_root="")


def test_unknown_source_dropped_with_a_note_on_own_data():
    kept, note = named_sources(MANIFEST, ["inpaint", "gan"], data_root="/data/mine")
    assert kept == ["gan"] and "inpaint" in note


@pytest.mark.filterwarnings("ignore::lib.data.splits.SplitWarning")   # 9 to 17 groups: a small test hold-out
def test_open_study_forwards_group_and_merge_options(tmp_path, monkeypatch):
    from functools import partial

    import numpy as np
    from PIL import Image

    from conftest import write_image
    from lib.data.manifest import build_manifest_tables
    from lib.data.splits import make_splits
    from lib.studies.common import open_study

    root = tmp_path / "data"
    for i in range(8):
        write_image(root / "real" / f"{i}.png", (24, 24))
        write_image(root / "fake" / f"{i}.png", (24, 24))
    pixels = np.asarray(Image.open(root / "real" / "0.png")).astype(int)
    Image.fromarray(np.clip(pixels + 2, 0, 255).astype(np.uint8)).save(root / "fake" / "copy.png")
    monkeypatch.setattr("lib.data.dataset.build_manifest_tables",
                        partial(build_manifest_tables, cache_dir=tmp_path / "cache"))
    monkeypatch.setattr("lib.studies.common.make_splits", partial(make_splits, cache_dir=None))
    study = open_study(str(root), n_folds=2)
    assert len(study.dataset.merges) == 1 and study.manifest["group"].nunique() == 16
    assert len(study.splits) == len(study.manifest) == 17
    kept = open_study(str(root), n_folds=2, merge_near_duplicates=False)
    assert kept.dataset.merges.empty and kept.manifest["group"].nunique() == 17
    stems = open_study(str(root), n_folds=2, group_regex=r"([^/]+)\.png$", merge_near_duplicates=False)
    assert stems.manifest["group"].nunique() == 9   # 0..7 shared by real/i.png and fake/i.png, plus "copy"
