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
