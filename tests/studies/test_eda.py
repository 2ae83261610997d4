import numpy as np
import pandas as pd

from lib.studies import eda


def toy_manifest(n=60, square_fakes=True, seed=0):
    rng = np.random.default_rng(seed)
    label = np.repeat([0, 1], n // 2)
    width = np.where((label == 1) & square_fakes, 64, 80) + rng.integers(0, 2, n) * 0
    return pd.DataFrame({
        "label": label, "width": width, "height": 64, "bytes": rng.integers(3000, 4000, n),
        "format": "PNG", "jpeg_quality": np.nan, "group": [f"g{i // 2}" for i in range(n)],
    })


def test_shortcut_probe_flags_geometry_and_not_noise():
    flagged = eda.shortcut_probe(toy_manifest(square_fakes=True), n_folds=5)
    assert flagged["flagged"] and flagged["auc_mean"] > 0.95
    assert flagged["importance"].index[0] in ("aspect", "width", "bytes_per_pixel")
    clean = eda.shortcut_probe(toy_manifest(square_fakes=False), n_folds=5)
    assert not clean["flagged"]


def test_metadata_features_do_not_modify_input():
    m = toy_manifest()
    before = m.copy()
    feats = eda.metadata_features(m)
    pd.testing.assert_frame_equal(m, before)
    assert (feats["jpeg_quality"] == -1).all() and "format_PNG" in feats


def test_duplicate_report_marks_pairs_across_groups_and_splits():
    pairs = pd.DataFrame({"i": [0, 0], "j": [2, 1], "distance": [0, 3]})
    m = pd.DataFrame({"group": ["x", "x", "z"], "source": ["real", "real", "fake"]})
    splits = pd.DataFrame({"split": ["trainval", "trainval", "test"], "fold": [0, 0, -1]})
    report = eda.duplicate_report(m, splits, pairs)
    assert report["cross_group"].tolist() == [True, False] and report["cross_split"].tolist() == [True, False]


def test_colour_statistics():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    stats = eda.colour_statistics([red])
    assert stats.loc[0, "mean_r"] == 1.0 and stats.loc[0, "mean_g"] == 0.0 and stats.loc[0, "saturation"] == 1.0


def test_image_subset_is_sorted_unique_and_capped():
    rows = eda.image_subset(10, 4, np.random.default_rng(0))
    assert len(rows) == 4 and len(set(rows)) == 4 and (np.diff(rows) > 0).all() and rows.max() < 10
    assert eda.image_subset(3, 4, np.random.default_rng(0)).tolist() == [0, 1, 2]


def test_skipped_by_reason_counts_and_handles_nothing_skipped():
    skipped = pd.DataFrame({"path": ["a", "b", "c"], "reason": ["truncated", "tiny", "truncated"]})
    assert eda.skipped_by_reason(skipped).set_index("reason")["files"].to_dict() == {"tiny": 1, "truncated": 2}
    empty = eda.skipped_by_reason(pd.DataFrame(columns=["path", "reason"]))
    assert empty.empty and list(empty.columns) == ["reason", "files"]


def test_geometry_by_class_square_share():
    m = eda.with_class_names(pd.DataFrame({"label": [0, 0, 1, 1], "width": [80, 64, 64, 64], "height": 64,
                                           "bytes": [10, 20, 30, 40]}))
    geometry = eda.geometry_by_class(m).set_index("cls")
    assert geometry.loc["real", "square_share"] == 0.5 and geometry.loc["fake", "square_share"] == 1.0
    assert geometry.loc["fake", "bytes_median"] == 35


def test_class_source_counts_counts_images_and_groups():
    m = eda.with_class_names(pd.DataFrame({"label": [0, 0, 1], "source": ["real", "real", "gan"],
                                           "path": ["a", "b", "c"], "group": ["g0", "g0", "g1"]}))
    counts = eda.class_source_counts(m).set_index("source")
    assert counts.loc["real", "images"] == 2 and counts.loc["real", "groups"] == 1
    assert counts.loc["gan", "cls"] == "fake"


def test_probe_record_is_json_ready():
    import json

    probe = {"fold_auc": [0.5, 0.7], "auc_mean": 0.6, "flagged": False, "importance": pd.Series({"width": 0.9})}
    assert json.loads(json.dumps(eda.probe_record(probe)))["importance"] == {"width": 0.9}
    assert list(eda.probe_table(probe).columns) == ["auc_mean", "flagged"]


def test_dataset_near_duplicates_reads_the_manifest_hashes():
    from lib.data.duplicates import phash, to_hex

    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    rows = [pictures[0], pictures[1], pictures[0], pictures[2]]   # rows 0 and 2 identical
    m = pd.DataFrame({"phash": [to_hex(phash(p)) for p in rows], "group": ["a", "b", "c", "d"], "source": "real"})
    splits = pd.DataFrame({"split": ["trainval", "trainval", "test", "trainval"], "fold": [0, 1, -1, 0]})
    dups = eda.dataset_near_duplicates(m, splits, max_distance=0)
    assert dups[["i", "j"]].values.tolist() == [[0, 2]]
    summary = eda.duplicate_summary(dups)
    assert summary.iloc[0].to_dict() == {"pairs": 1, "cross_group": 1, "cross_group_and_split": 1}


def test_merge_summary_counts_merges_per_kind():
    from lib.data.duplicates import empty_merges

    merges = pd.DataFrame({"kind": ["perceptual hash", "perceptual hash", "identical bytes"],
                           "new_group": ["a", "a", "b"]})
    table = eda.merge_summary(merges).set_index("kind")
    assert table.loc["perceptual hash"].tolist() == [2, 1] and table.loc["identical bytes"].tolist() == [1, 1]
    assert eda.merge_summary(empty_merges()).empty


def test_duplicate_summary_of_no_pairs():
    empty = eda.duplicate_report(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(columns=["i", "j", "distance"]))
    assert eda.duplicate_summary(empty).iloc[0].to_dict() == {"pairs": 0, "cross_group": 0, "cross_group_and_split": 0}


def test_planted_shortcuts_from_the_card():
    assert eda.planted_shortcuts(None) == {}
    card = {"params": {"geometry_shortcut": True, "compression": None, "noise": 1}}
    assert eda.planted_shortcuts(card) == {"geometry_shortcut": True, "compression": None, "difficulty": None}


def test_difficulty_band():
    assert eda.difficulty_band(0.55) == "near chance"
    assert eda.difficulty_band(0.8) == "between chance and perfection"
    assert eda.difficulty_band(0.99) == "near perfect"


def test_shortcut_families_probe_each_shortcut_and_skip_constant_features():
    families = eda.shortcut_families(toy_manifest(square_fakes=True), n_folds=5).set_index("shortcut")
    assert bool(families.loc["geometry", "flagged"]) and families.loc["geometry", "auc_mean"] > 0.95
    assert families.loc["geometry", "neutraliser"] == "center_crop"
    # every image is a PNG: only bytes_per_pixel varies in the compression family
    assert families.loc["compression", "features"] == "bytes_per_pixel"
    assert families.loc["compression", "recipe"] == "Recipe(jpeg_quality=q)"


def _families(geometry: bool, compression: bool) -> pd.DataFrame:
    return pd.DataFrame({"shortcut": ["geometry", "compression"], "features": ["width, aspect", "jpeg_quality"],
                         "auc_mean": [0.99 if geometry else 0.5, 0.99 if compression else 0.5],
                         "flagged": [geometry, compression], "neutraliser": ["center_crop", "jpeg"],
                         "neutraliser_text": ["the largest centred square", "both classes re-encoded at one quality"],
                         "recipe": ['Recipe(mode="center_crop")', "Recipe(jpeg_quality=q)"]})


def _conclusion_inputs(flagged: bool):
    manifest = pd.DataFrame({"label": [0, 0, 1, 1], "source": ["real", "real", "gan", "gan"],
                             "group": ["a", "a", "b", "c"], "width": [80, 80, 64, 64], "height": 64})
    geometry = pd.DataFrame({"cls": ["fake", "real"], "square_share": [1.0, 0.25]})
    probe = {"flagged": flagged, "auc_mean": 0.91, "auc_ci_low": 0.85, "auc_ci_high": 0.97, "fold_auc": [0.9] * 5,
             "importance": pd.Series({"aspect": 0.7, "width": 0.3})}
    difficulty = pd.DataFrame({"model": ["simple_cnn"], "epochs": [3], "test_auc": [0.75], "test_n": [40],
                               "test_real_groups": [3], "test_fake_groups": [5]})
    duplicates = pd.DataFrame({"pairs": [3], "cross_group": [0], "cross_group_and_split": [0]})
    merges = pd.DataFrame({"kind": ["perceptual hash", "identical bytes"], "new_group": ["a", "b"]})
    return manifest, pd.DataFrame(columns=["path", "reason"]), geometry, probe, difficulty, duplicates, merges


def test_conclusions_computed_from_the_tables():
    manifest, skipped, geometry, probe, difficulty, duplicates, merges = _conclusion_inputs(flagged=True)
    lines = eda.conclusions(manifest, skipped, geometry, probe, _families(True, False),
                            {"geometry_shortcut": True, "compression": None}, difficulty, duplicates, merges,
                            max_distance=4)
    assert lines[0] == ("4 images (2 real, 2 fake) from 2 sources and 3 groups (1 holding real, 2 holding fake "
                        "images); 0 file(s) skipped as unreadable or unusable.")
    assert lines[1] == "Square images: 25% of real vs 100% of fake."
    assert "FLAGGED" in lines[2] and "0.850-0.970, 5 group-aware folds over 1 real and 2 fake groups" in lines[2]
    assert lines[2].endswith("top feature: aspect; per shortcut: geometry AUC 0.990 FLAGGED; compression AUC 0.500.")
    assert lines[3].endswith("the probe found a metadata shortcut, as expected.")
    assert lines[4] == ("Difficulty probe: simple_cnn trained 3 epochs on centre crops reaches test AUC 0.750 on 40 "
                        "held-out images from 3 real and 5 fake groups (between chance and perfection).")
    assert lines[5].startswith("Geometry shortcut flagged; the CNN probe already trains and scores on centre crops")
    assert lines[5].endswith("(median short side 64 px), so its AUC does not rest on geometry.")
    assert lines[6] == ("Near-duplicates: 2 group merge(s) before splitting (1 by identical bytes, 1 by perceptual "
                        "hash); after merging, 3 pairs within 4 bits, 0 across groups, 0 across groups and split roles.")


def test_conclusions_flag_a_probe_contrary_to_the_card_and_skip_the_card_line_without_one():
    manifest, skipped, geometry, probe, difficulty, duplicates, merges = _conclusion_inputs(flagged=False)
    quiet = _families(False, False)
    lines = eda.conclusions(manifest, skipped, geometry, probe, quiet, {"geometry_shortcut": True}, difficulty,
                            duplicates, merges, 4)
    assert "not flagged" in lines[2] and lines[3].endswith("did not find a metadata shortcut, CONTRARY to the card.")
    assert len(eda.conclusions(manifest, skipped, geometry, probe, quiet, {}, difficulty, duplicates, merges, 4)) == 5


def test_a_flagged_shortcut_makes_the_cnn_probe_uninterpretable_and_names_its_neutraliser():
    manifest, skipped, geometry, probe, difficulty, duplicates, merges = _conclusion_inputs(flagged=True)
    lines = eda.shortcut_caveats(manifest, probe, _families(False, True))
    assert len(lines) == 1 and lines[0].startswith("Compression shortcut flagged: the CNN probe's AUC may be that "
                                                   "shortcut and is not evidence that the content is detectable")
    assert "`jpeg`" in lines[0] and "Recipe(jpeg_quality=q)" in lines[0]
    # geometry: the probe's centre crop removes it when both classes share the short side (80x64 vs 64x64) ...
    same_scale = eda.shortcut_caveats(manifest, probe, _families(True, False))
    assert "does not rest on geometry" in same_scale[0] and "`center_crop`" in same_scale[0]
    # ... not when the resolutions differ
    other_scale = eda.shortcut_caveats(manifest.assign(height=[128, 128, 64, 64], width=[160, 160, 64, 64]), probe,
                                       _families(True, False))
    assert "may be that shortcut" in other_scale[0] and "128 px real vs 64 px fake" in other_scale[0]
    # flagged only jointly: every neutraliser is named; nothing flagged: no caveat
    joint = eda.shortcut_caveats(manifest, probe, _families(False, False))
    assert len(joint) == 2
    assert eda.shortcut_caveats(manifest, {**probe, "flagged": False}, _families(False, False)) == []


def test_difficulty_line_warns_when_too_few_groups_stand_behind_it():
    manifest, skipped, geometry, probe, difficulty, duplicates, merges = _conclusion_inputs(flagged=False)
    lines = eda.conclusions(manifest, skipped, geometry, probe, _families(False, False), {},
                            difficulty.assign(test_real_groups=1), duplicates.assign(cross_group=2), merges, 4)
    assert "from 1 real and 5 fake groups" in lines[3] and lines[3].endswith("speak beyond them.")
    assert "2 across groups" in lines[4] and "merge_near_duplicates=True" in lines[4]
