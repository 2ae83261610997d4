"""Phase 4 study functions behind notebook 06: the selection it evaluates, the data-scaling and final-evaluation
runs (with run_candidates replaced by a stub), the tests against the smallest fraction and the Phase 1 references,
the hard-example galleries and the computed conclusion lines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lib.studies import phase4
from lib.studies.phase3 import Candidate
from lib.data.recipes import Recipe
from lib.training.fit import TrainConfig
from lib.fileio import ArtefactMismatch, write_stamped_json

PHASE1_RECIPE = Recipe(size=32)
PHASE1_CONFIG = TrainConfig(epochs=3)


# ----------------------------------------------------------------------------------------------- selection

STAMP = {"dataset": "fp-a", "split_key": "split-a"}


def test_selection_falls_back_to_the_phase1_baselines_and_says_why(tmp_path):
    sel = phase4.load_selection(tmp_path / "phase3_selection.json", ["simple_cnn", "resnet18"], PHASE1_RECIPE,
                                PHASE1_CONFIG, STAMP)
    assert sel.labels == ["simple_cnn", "resnet18"] and sel.face_min_confidence == 0.9 and sel.rule == ""
    assert all(recipe == PHASE1_RECIPE and config == PHASE1_CONFIG for _, recipe, config in sel.entries)
    assert "Phase 1 baselines" in sel.origin and "not found" in sel.origin
    with pytest.raises(ValueError, match="selects no model"):
        phase4.load_selection(tmp_path / "phase3_selection.json", [], PHASE1_RECIPE, PHASE1_CONFIG, STAMP)


def _record(**extra) -> dict:
    entry = {**Candidate("npr (x)", "npr", {"factor": 0.5}).to_dict(), "recipe": Recipe(size=48).to_dict(),
             "train": TrainConfig(epochs=2).to_dict()}
    return {"entries": [entry], "rule": "best AUC", "metric": "oof_auc", "preprocessing": {"face_min_confidence": 0.8},
            **extra}


def test_selection_is_read_from_the_stamped_phase3_file(tmp_path):
    path = tmp_path / "phase3_selection.json"
    write_stamped_json(path, _record(), STAMP)
    sel = phase4.load_selection(path, ["simple_cnn"], PHASE1_RECIPE, PHASE1_CONFIG, STAMP)
    cand, recipe, config = sel.entries[0]
    assert sel.labels == ["npr (x)"] and cand == Candidate("npr (x)", "npr", {"factor": 0.5})
    assert recipe == Recipe(size=48) and config == TrainConfig(epochs=2)
    assert sel.face_min_confidence == 0.8 and sel.rule == "best AUC"
    assert sel.origin == ("Phase 3 selection (phase3_selection.json; chosen on out-of-fold validation predictions by "
                          "oof_auc)")
    write_stamped_json(path, _record(entries=[]), STAMP)
    with pytest.raises(ValueError, match="selects no model"):
        phase4.load_selection(path, ["simple_cnn"], PHASE1_RECIPE, PHASE1_CONFIG, STAMP)


def test_selection_from_another_dataset_or_made_on_test_is_refused(tmp_path):
    path = tmp_path / "phase3_selection.json"
    write_stamped_json(path, _record(), {"dataset": "fp-b", "split_key": "split-a"})
    with pytest.raises(ArtefactMismatch, match="fp-b") as err:
        phase4.load_selection(path, ["simple_cnn"], PHASE1_RECIPE, PHASE1_CONFIG, STAMP)
    assert "fp-a" in str(err.value)
    path.write_text(json.dumps(_record()))  # unstamped: an older notebook 05
    with pytest.raises(ArtefactMismatch, match="no record"):
        phase4.load_selection(path, ["simple_cnn"], PHASE1_RECIPE, PHASE1_CONFIG, STAMP)
    write_stamped_json(path, _record(metric="test_auc"), STAMP)
    with pytest.raises(ValueError, match="reads the test hold-out"):
        phase4.load_selection(path, ["simple_cnn"], PHASE1_RECIPE, PHASE1_CONFIG, STAMP)


def _selection(*labels: str, recipe: Recipe = PHASE1_RECIPE) -> phase4.Selection:
    return phase4.Selection([(Candidate(m, m), recipe, PHASE1_CONFIG) for m in labels], "the test", 0.7, "the rule")


def test_phase1_references_leave_out_selected_baselines():
    assert phase4.phase1_references(_selection("resnet18", "npr"), ["simple_cnn", "resnet18"]) == ["simple_cnn"]
    assert phase4.phase1_references(_selection("simple_cnn"), ["simple_cnn"]) == []


# ----------------------------------------------------------------------------------------------- runs (stubbed)

class FakeRuns:
    """Stands in for `run_candidates` and `recipe_boxes`: records the calls and returns one row per candidate."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(phase4, "run_candidates", self.run_candidates)
        monkeypatch.setattr(phase4, "recipe_boxes", lambda manifest, recipe, confidence: ("boxes", confidence))

    def run_candidates(self, dataset, splits, recipe, config, entries, boxes=None):
        self.calls.append({"splits": splits, "recipe": recipe, "models": [c.label for c in entries], "boxes": boxes})
        cv = pd.DataFrame({"model": [c.label for c in entries], "fold": 0,
                           "run_key": [f"k{len(self.calls)}"] * len(entries)})
        return cv, cv.assign(path="img.png")


def test_run_scaling_tags_every_model_and_fraction(monkeypatch):
    runs = FakeRuns(monkeypatch)
    dataset = type("Dataset", (), {"manifest": pd.DataFrame()})()
    cv, pred = phase4.run_scaling(dataset, {0.5: "half", 1.0: "full"}, _selection("a", "b").entries, 0.8)
    assert cv["condition"].tolist() == ["a @ 50%", "a @ 100%", "b @ 50%", "b @ 100%"]
    assert cv["fraction"].tolist() == [0.5, 1.0, 0.5, 1.0] and pred["condition"].equals(cv["condition"])
    assert [c["splits"] for c in runs.calls] == ["half", "full", "half", "full"]
    assert all(c["boxes"] == ("boxes", 0.8) for c in runs.calls)


def test_run_final_adds_the_references_with_the_phase1_recipe(monkeypatch):
    runs = FakeRuns(monkeypatch)
    dataset = type("Dataset", (), {"manifest": pd.DataFrame()})()
    selection = _selection("npr", recipe=Recipe(size=48))
    cv, pred = phase4.run_final(dataset, "splits", selection, ["simple_cnn", "resnet18"], PHASE1_RECIPE, PHASE1_CONFIG)
    assert cv["model"].tolist() == ["npr", "simple_cnn", "resnet18"] and len(pred) == 3
    assert cv["role"].tolist() == ["selected", "Phase 1 baseline", "Phase 1 baseline"]
    assert [c["recipe"] for c in runs.calls] == [Recipe(size=48), PHASE1_RECIPE]
    assert runs.calls[0]["boxes"] == ("boxes", 0.7) and runs.calls[1]["boxes"] is None
    cv, _ = phase4.run_final(dataset, "splits", _selection("npr"), [], PHASE1_RECIPE, PHASE1_CONFIG)
    assert cv["role"].tolist() == ["selected"]


# ----------------------------------------------------------------------------------------------- tables

def _scaling_predictions(gain: dict[str, float] | None = None, seed: int = 0) -> pd.DataFrame:
    """Predictions of every (model, fraction) condition: validation rows (the 50 % subsample validates the even
    groups only) and a shared test set of 4 + 4 groups; `gain` separates the classes more at 100 %."""
    gain = gain or {"a": 2.5, "b": 0.0}
    rng = np.random.default_rng(seed)
    rows = []
    for model, g in gain.items():
        for fraction in (0.5, 1.0):
            strength = 0.3 + (g if fraction == 1.0 else 0.0)
            for split, groups in (("val", range(24)), ("test", range(100, 108))):
                for group in groups:
                    if split == "val" and fraction == 0.5 and group % 4 >= 2:
                        continue
                    label = group % 2
                    for fold in ([group % 3] if split == "val" else range(3)):
                        for c in range(2):
                            z = strength * (2 * label - 1) + rng.normal(0, 1)
                            rows.append({"model": model, "fraction": fraction, "fold": fold, "split": split,
                                         "condition": phase4.scaling_condition(model, fraction), "label": label,
                                         "group": f"g{group}", "path": f"g{group}_{c}.png", "source": "s",
                                         "probability": 1 / (1 + np.exp(-z))})
    return pd.DataFrame(rows)


def test_learning_curve_has_one_interval_per_condition_and_set():
    curve = phase4.learning_curve(_scaling_predictions(), metrics=("auc", "accuracy"))
    assert len(curve) == 4 * 2 * 2 and set(curve["set"]) == {"oof", "test"}
    auc = curve[curve["metric"] == "auc"].set_index(["model", "fraction", "set"])
    assert auc.loc[("a", 1.0, "test"), "estimate"] > auc.loc[("a", 0.5, "test"), "estimate"]
    assert auc.loc[("a", 0.5, "oof"), "real_groups"] == 6 and auc.loc[("a", 1.0, "oof"), "real_groups"] == 12
    assert (auc.xs("test", level="set")["real_groups"] == 4).all(), "the test hold-out is the same for every fraction"
    assert ((curve["ci_low"] >= 0) & (curve["ci_high"] <= 1)).all()


def test_scaling_comparisons_pair_the_largest_with_the_smallest_fraction_on_shared_images():
    family = phase4.scaling_comparisons(_scaling_predictions(), fractions=[1.0, 0.5])
    oof = family[family["set"] == "oof"]
    assert list(zip(oof["a"], oof["b"])) == [("a @ 100%", "a @ 50%"), ("b @ 100%", "b @ 50%")]
    assert (oof["real_groups"] == 6).all(), "on oof only the groups both fractions validated"
    assert family.set_index(["a", "set"]).loc[("a @ 100%", "oof"), "verdict"] == "supported"
    single = phase4.scaling_comparisons(_scaling_predictions(), fractions=[1.0])
    assert single.empty and "verdict" in single.columns


def _final_cv() -> pd.DataFrame:
    rows = []
    for model, role, auc in (("new", "selected", 0.9), ("ref", "Phase 1 baseline", 0.7)):
        for fold, step in enumerate((-0.02, 0.0, 0.02)):
            rows.append({"model": model, "role": role, "fold": fold, "test_auc": auc + step, "test_ap": auc,
                         "test_accuracy": auc - 0.1 + step, "test_f1": auc - 0.1, "test_ece": 0.1 + step,
                         "test_brier": 0.2 + step / 2, "val_auc": auc - 0.05 + step})
    return pd.DataFrame(rows)


def _final_predictions() -> pd.DataFrame:
    predictions = _scaling_predictions()
    predictions = predictions[predictions["fraction"] == 1.0]
    return predictions.assign(model=predictions["model"].map({"a": "new", "b": "ref"}))


def test_final_summary_has_every_metric_and_each_models_role():
    summary, table = phase4.final_summary(_final_cv())
    assert summary["metric"].tolist() == list(phase4.FINAL_METRICS) * 2
    assert list(table.columns) == [*phase4.FINAL_METRICS, "role"] and table.index.tolist() == ["new", "ref"]
    assert table.loc["ref", "role"] == "Phase 1 baseline" and table.loc["new", "auc"].startswith("0.900 ± 0.020")
    calibration = phase4.calibration_summary(summary)
    assert calibration.loc["new", "ece"] == pytest.approx(0.1) and calibration.loc["ref", "brier"] == pytest.approx(0.2)


def test_final_table_has_intervals_groups_role_and_calibration():
    from lib.studies import phase1

    intervals = phase1.intervals(_final_predictions())
    summary, _ = phase4.final_summary(_final_cv())
    table = phase4.final_table(intervals, summary, _final_cv())
    assert table.index.tolist() == ["new", "ref"]
    assert {"oof AUC", "test AUC", "oof groups", "test groups", "role", "ece", "brier"} <= set(table.columns)
    assert table.loc["new", "test groups"] == "4 real / 4 fake groups" and table.loc["new", "role"] == "selected"


def test_reference_comparisons_pair_every_selected_model_with_every_reference():
    family = phase4.reference_comparisons(_final_predictions(), ["new"], ["ref"])
    assert set(zip(family["set"], family["metric"])) == {("oof", "auc"), ("oof", "accuracy"), ("test", "auc"),
                                                         ("test", "accuracy")}
    assert (family["a"] == "new").all() and (family["b"] == "ref").all()
    assert family.set_index(["set", "metric"]).loc[("oof", "auc"), "verdict"] == "supported"
    empty = phase4.reference_comparisons(_final_predictions(), ["new"], [])
    assert empty.empty and "verdict" in empty.columns
    assert phase4.reference_pairs(["new", "ref"], ["ref"]) == [("new", "ref")]


def test_hard_galleries_are_named_by_model_index_and_kind(image_factory, tmp_path):
    import matplotlib.pyplot as plt

    paths = [image_factory(f"img/{i}.png") for i in range(3)]
    hard = pd.DataFrame({"model": ["a", "a", "b"], "kind": ["false positive", "false negative", "false positive"],
                         "path": [str(p) for p in paths], "source": ["real", "gen", "real"],
                         "probability": [0.9, 0.1, 0.8]})
    figures = phase4.plot_hard_galleries(hard, {"a": 0.5, "b": 0.4}, ["a", "b"], tmp_path / "figures")
    plt.close("all")
    assert [p.name for p in figures] == ["phase4_hard_0_false_positive.png", "phase4_hard_0_false_negative.png",
                                         "phase4_hard_1_false_positive.png", "phase4_hard_1_false_negative.png"]
    assert all(p.is_file() for p in figures), "a model without errors of a kind still gets its (empty) gallery"


# ----------------------------------------------------------------------------------------------- conclusions

def test_scaling_conclusions_follow_the_numbers():
    split_check = pd.DataFrame({"fraction": [0.5, 1.0], "trainval": [34, 69], "test_identical": [True, True],
                                "trainval_subset": [True, False]})
    predictions = _scaling_predictions({"a": 2.5})
    curve = phase4.learning_curve(predictions)
    family = phase4.scaling_comparisons(predictions, [0.5, 1.0])
    lines = phase4.scaling_conclusions(_selection("a"), {0.2: "too few groups"}, split_check, curve, family)
    assert lines[0] == "Models: a from the test (rule: the rule)."
    assert lines[1] == "Fraction 20% left out of the learning curve: too few groups."
    assert lines[2] == ("Subsamples: test hold-out identical across fractions: yes; training parts nested in the full "
                        "one: NO; training images 50%: 34, 100%: 69.")
    assert lines[3].startswith("a @ 50%: AUC on out-of-fold validation 0.") and "6 real / 6 fake groups" in lines[3]
    assert lines[4].startswith("a @ 100%: AUC on out-of-fold validation") and "12 real / 12 fake groups" in lines[4]
    assert lines[5].startswith("More data: a @ 100% - a @ 50% AUC on oof: +")
    assert lines[5].endswith("-> claim 'a @ 100% > a @ 50%': supported")
    assert lines[6].startswith("More data: a @ 100% - a @ 50% AUC on test: +") and len(lines) == 7
    fallback = phase4.Selection([(Candidate("a", "a"), PHASE1_RECIPE, PHASE1_CONFIG)], "Phase 1 baselines (x)", 0.9)
    empty = phase4.scaling_comparisons(predictions, [1.0])
    assert phase4.scaling_conclusions(fallback, {}, split_check, curve.iloc[:0], empty)[0] == \
        "Models: a from Phase 1 baselines (x)."


def test_final_conclusions_follow_the_numbers():
    from lib.studies import phase1

    predictions = _final_predictions()
    intervals = phase1.intervals(predictions)
    summary, _ = phase4.final_summary(_final_cv())
    family = phase4.reference_comparisons(predictions, ["new"], ["ref"])
    folds = phase1.fold_level_tests(_final_cv(), [("new", "ref")])
    per_source = pd.DataFrame({"model": ["new", "new", "new"], "source": ["real", "gan", "diffusion"],
                               "label": [0, 1, 1], "accuracy_mean": [0.1, 0.8, 0.6]})
    hard = pd.DataFrame({"model": ["new"] * 3, "kind": ["false positive", "false positive", "false negative"]})
    lines = phase4.final_conclusions(intervals, summary, family, folds, pd.DataFrame(), "DeLong omitted.", per_source,
                                     hard, _selection("new"), n_hard=8)
    assert lines[0] == ("Final report: new from the test; the test hold-out is scored here for them and the Phase 1 "
                        "references. Their oof numbers are those they were chosen on (optimistic); the test numbers "
                        "are not.")
    assert lines[1].startswith("new: AUC on out-of-fold validation ") and "12 real / 12 fake groups" in lines[1]
    assert lines[1].endswith("4 real / 4 fake groups; ECE 0.100, Brier 0.200 (test, fold mean).")
    assert lines[2].startswith("ref: AUC on out-of-fold validation")
    assert lines[3].startswith("new - ref AUC on oof: +") and lines[4].startswith("new - ref AUC on test: ")
    assert lines[5].startswith("Secondary, over 3 folds (Nadeau-Bengio corrected t, validation AUC): new - ref +0.200")
    assert lines[6] == "DeLong omitted."
    assert lines[7] == "new: hardest fake source diffusion (test accuracy 0.600 at 0.5, fold mean)."
    assert lines[8] == ("new errors on the test set at its validation threshold: 2 false positives and 1 false "
                        "negatives shown (at most 8 each).")
    assert len(lines) == 9
    no_refs = phase4.final_conclusions(intervals, summary, family.iloc[:0], folds.iloc[:0], pd.DataFrame(), "",
                                       per_source, hard.iloc[:0], _selection("new"), n_hard=8)
    assert not any(" - ref " in line for line in no_refs) and "0 false positives and 0 false" in no_refs[-1]


def test_a_thin_fraction_is_said_as_a_sentence_not_a_raw_warning(monkeypatch, capsys):
    import warnings

    import lib.data.splits as splits_module
    from lib.data.splits import SplitWarning

    def thin_split(manifest, subsample=1.0, **kw):
        warnings.warn("fold 2 validation (1 real, 10 fake)", SplitWarning)
        return pd.DataFrame({"split": ["trainval"]})

    monkeypatch.setattr(splits_module, "make_splits", thin_split)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning left raw fails the test
        splits, infeasible = phase4.scaling_splits(pd.DataFrame({"label": [0, 1]}), [0.35, 1.0])
    assert sorted(splits) == [0.35, 1.0] and infeasible == {}
    out = capsys.readouterr().out
    assert "training fraction 0.35: fold 2 validation (1 real, 10 fake)" in out
