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

PHASE1_RECIPE = Recipe(size=32)
PHASE1_CONFIG = TrainConfig(epochs=3)


# ----------------------------------------------------------------------------------------------- selection

def test_selection_falls_back_to_the_phase1_baselines_and_says_why(tmp_path):
    sel = phase4.load_selection(tmp_path / "phase3_selection.json", ["simple_cnn", "resnet18"], PHASE1_RECIPE,
                                PHASE1_CONFIG)
    assert sel.labels == ["simple_cnn", "resnet18"] and sel.face_min_confidence == 0.9
    assert all(recipe == PHASE1_RECIPE and config == PHASE1_CONFIG for _, recipe, config in sel.entries)
    assert "Phase 1 baselines" in sel.origin and "not found" in sel.origin
    with pytest.raises(ValueError, match="selects no model"):
        phase4.load_selection(tmp_path / "phase3_selection.json", [], PHASE1_RECIPE, PHASE1_CONFIG)


def test_selection_is_read_from_the_phase3_file(tmp_path):
    path = tmp_path / "phase3_selection.json"
    entry = {**Candidate("npr (x)", "npr", {"factor": 0.5}).to_dict(), "recipe": Recipe(size=48).to_dict(),
             "train": TrainConfig(epochs=2).to_dict()}
    path.write_text(json.dumps({"entries": [entry], "rule": "best AUC",
                                "preprocessing": {"face_min_confidence": 0.8}}))
    sel = phase4.load_selection(path, ["simple_cnn"], PHASE1_RECIPE, PHASE1_CONFIG)
    cand, recipe, config = sel.entries[0]
    assert sel.labels == ["npr (x)"] and cand == Candidate("npr (x)", "npr", {"factor": 0.5})
    assert recipe == Recipe(size=48) and config == TrainConfig(epochs=2)
    assert sel.face_min_confidence == 0.8 and sel.origin == "Phase 3 selection (phase3_selection.json; rule: best AUC)"
    path.write_text(json.dumps({"entries": [], "rule": "best AUC"}))
    with pytest.raises(ValueError, match="selects no model"):
        phase4.load_selection(path, ["simple_cnn"], PHASE1_RECIPE, PHASE1_CONFIG)


def _selection(*labels: str, recipe: Recipe = PHASE1_RECIPE) -> phase4.Selection:
    return phase4.Selection([(Candidate(m, m), recipe, PHASE1_CONFIG) for m in labels], "the test", 0.7)


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

def _scaling_cv() -> pd.DataFrame:
    rows = [{"model": m, "fraction": f, "fold": k, "test_auc": auc + step, "test_accuracy": 0.5 + step}
            for m, gain in (("a", 0.2), ("b", 0.0)) for f, auc in ((0.5, 0.6), (1.0, 0.6 + gain))
            for k, step in enumerate((-0.01, 0.0, 0.01))]
    return pd.DataFrame(rows).assign(condition=lambda t: [phase4.scaling_condition(m, f)
                                                          for m, f in zip(t["model"], t["fraction"])])


def _scaling_predictions(seed: int = 0) -> pd.DataFrame:
    """Fold models' predictions of every condition of `_scaling_cv` on a shared test set and their own val parts."""
    rng = np.random.default_rng(seed)
    rows = []
    for condition in _scaling_cv()["condition"].unique():
        for fold in range(3):
            for split, n in (("val", 10), ("test", 12)):
                for i in range(n):
                    label = i % 2
                    rows.append({"condition": condition, "fold": fold, "split": split, "label": label,
                                 "path": f"{split}_{fold if split == 'val' else ''}{i}.png", "source": "s",
                                 "probability": float(np.clip(0.3 + 0.4 * label + rng.normal(0, 0.2), 0, 1))})
    return pd.DataFrame(rows)


def test_learning_curves_stack_one_curve_per_metric():
    curve = phase4.learning_curves(_scaling_cv(), metrics=("auc", "accuracy"))
    assert curve["metric"].tolist() == ["auc"] * 4 + ["accuracy"] * 4
    auc = curve[curve["metric"] == "auc"].set_index(["model", "fraction"])["mean"]
    assert auc.loc[("a", 1.0)] == pytest.approx(0.8) and auc.loc[("b", 1.0)] == pytest.approx(0.6)


def test_scaling_tests_compare_the_largest_with_the_smallest_fraction():
    delta, test_set = phase4.scaling_tests(_scaling_cv(), _scaling_predictions(), fractions=[1.0, 0.5])
    assert delta["model"].tolist() == ["a", "b"] and delta["delta"].tolist() == pytest.approx([0.2, 0.0])
    assert (delta["low"] == 0.5).all() and (delta["high"] == 1.0).all()
    assert list(zip(test_set["a"], test_set["b"])) == [("a @ 100%", "a @ 50%"), ("b @ 100%", "b @ 50%")]
    assert (test_set["n_test"] == 12).all() and {"delong_auc1", "threshold_a"} <= set(test_set.columns)
    single, none = phase4.scaling_tests(_scaling_cv(), _scaling_predictions(), fractions=[1.0])
    assert single.empty and list(single.columns) == ["model", "delta", "verdict"] and none.empty


def _final_cv() -> pd.DataFrame:
    rows = []
    for model, role, auc in (("new", "selected", 0.9), ("ref", "Phase 1 baseline", 0.7)):
        for fold, step in enumerate((-0.02, 0.0, 0.02)):
            rows.append({"model": model, "role": role, "fold": fold, "test_auc": auc + step, "test_ap": auc,
                         "test_accuracy": auc - 0.1 + step, "test_f1": auc - 0.1, "test_ece": 0.1 + step,
                         "test_brier": 0.2 + step / 2})
    return pd.DataFrame(rows)


def test_final_summary_has_every_metric_and_each_models_role():
    summary, table = phase4.final_summary(_final_cv())
    assert summary["metric"].tolist() == list(phase4.FINAL_METRICS) * 2
    assert list(table.columns) == [*phase4.FINAL_METRICS, "role"] and table.index.tolist() == ["new", "ref"]
    assert table.loc["ref", "role"] == "Phase 1 baseline" and table.loc["new", "auc"].startswith("0.900 ± 0.020")
    calibration = phase4.calibration_summary(summary)
    assert calibration.loc["new", "ece"] == pytest.approx(0.1) and calibration.loc["ref", "brier"] == pytest.approx(0.2)


def test_reference_tests_pair_every_selected_model_with_every_reference():
    predictions = _scaling_predictions().rename(columns={"condition": "model"})
    predictions["model"] = predictions["model"].map({"a @ 50%": "new", "a @ 100%": "ref", "b @ 50%": "x",
                                                     "b @ 100%": "y"})
    cv = _final_cv()
    paired, test_set = phase4.reference_tests(cv, predictions, ["new"], ["ref"])
    assert paired["metric"].tolist() == ["test_auc", "test_accuracy"] and (paired["a"] == "new").all()
    assert "t_p_holm" in paired and test_set[["a", "b"]].values.tolist() == [["new", "ref"]]
    paired, test_set = phase4.reference_tests(cv, predictions, ["new"], [])
    assert paired.empty and test_set.empty


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
    delta = phase4.scaling_delta(_scaling_cv(), low=0.5, high=1.0).head(1)
    lines = phase4.scaling_conclusions(_selection("a"), {0.2: "too few groups"}, split_check, delta)
    assert lines[0] == "Models: a from the test."
    assert lines[1] == "Fraction 20% left out of the learning curve: too few groups."
    assert lines[2] == ("Subsamples: test hold-out identical across fractions: yes; training parts nested in the full "
                        "one: NO; training images 50%: 34, 100%: 69.")
    assert lines[3].startswith("a: test AUC 0.600 at 50% -> 0.800 at 100%, Δ +0.200 (Welch 95 % CI +")
    assert lines[3].endswith("-> more data helps: supported.") and len(lines) == 4
    empty = pd.DataFrame(columns=["model", "delta", "verdict"])
    assert len(phase4.scaling_conclusions(_selection("a"), {}, split_check, empty)) == 2


def test_final_conclusions_follow_the_numbers():
    summary, _ = phase4.final_summary(_final_cv())
    paired = pd.DataFrame([
        {"a": "new", "b": "ref", "metric": "test_auc", "mean_diff": 0.2, "diff_ci_low": 0.1, "diff_ci_high": 0.3,
         "n": 3, "t_p": 0.01, "t_p_holm": 0.02, "verdict": "supported"},
        {"a": "new", "b": "ref", "metric": "test_accuracy", "mean_diff": 0.2, "diff_ci_low": 0.1, "diff_ci_high": 0.3,
         "n": 3, "t_p": 0.01, "t_p_holm": 0.02, "verdict": "supported"}])
    per_source = pd.DataFrame({"model": ["new", "new", "new"], "source": ["real", "gan", "diffusion"],
                               "label": [0, 1, 1], "accuracy_mean": [0.1, 0.8, 0.6]})
    hard = pd.DataFrame({"model": ["new"] * 3, "kind": ["false positive", "false positive", "false negative"]})
    lines = phase4.final_conclusions(summary, paired, per_source, hard, ["new"], n_hard=8)
    assert lines[0] == "new: test AUC 0.900 (95 % CI 0.850-0.950), ECE 0.100, Brier 0.200."
    assert lines[1].startswith("ref: test AUC 0.700")
    assert lines[2].startswith("Paired over folds: new - ref AUC: +0.200"), "accuracy rows are not concluded"
    assert lines[3] == "new: hardest fake source diffusion (accuracy 0.600 at 0.5)."
    assert lines[4] == ("new errors on the test set at its validation threshold: 2 false positives and 1 false "
                        "negatives shown (at most 8 each).")
    assert len(lines) == 5
    no_refs = phase4.final_conclusions(summary, pd.DataFrame(), per_source, hard.iloc[:0], ["new"], n_hard=8)
    assert not any(line.startswith("Paired") for line in no_refs) and "0 false positives and 0 false" in no_refs[-1]
