"""Grad-CAM study functions behind notebook 07: which runs are explained, the energy table and its comparisons, the
CAM figures and the computed conclusion lines (runs and CAMs are synthetic; `explain_run` is tested with a trained
run in test_phase3_phase4_gradcam.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.studies import gradcam
from lib.data.recipes import Recipe
from lib.fileio import ArtefactMismatch, write_stamped_table, write_table
from lib.report.explain import expected_border_share
from lib.training.fit import TrainConfig


# ----------------------------------------------------------------------------------------------- which runs

def _phase2_folds() -> pd.DataFrame:
    return pd.DataFrame({"model": ["cnn"] * 4, "condition": ["baseline", "augment", "baseline", "face_crop"],
                         "fold": [0, 0, 1, 0], "run_key": ["p2a", "p2b", "p2c", "p2d"]})


def _phase3_folds() -> pd.DataFrame:
    return pd.DataFrame({"model": ["cnn (P3)", "simple_cnn", "cnn (P3)"], "fold": [0, 0, 1],
                         "group": ["Phase 3", "Phase 1 baseline", "Phase 3"], "run_key": ["p3a", "p3b", "p3c"]})


def test_phase2_and_phase3_subjects_keep_the_fold_and_the_asked_runs():
    every = gradcam.phase2_subjects(_phase2_folds(), fold=0)
    assert [s["subject"] for s in every] == ["cnn · baseline", "cnn · augment", "cnn · face_crop"]
    some = gradcam.phase2_subjects(_phase2_folds(), fold=0, conditions=["augment"])
    assert some == [{"subject": "cnn · augment", "group": "Phase 2", "condition": "augment", "model": "cnn",
                     "run_key": "p2b"}]
    p3 = gradcam.phase3_subjects(_phase3_folds(), fold=0)
    assert p3 == [{"subject": "cnn (P3) · Phase 3", "group": "Phase 3", "condition": "phase3", "model": "cnn (P3)",
                   "run_key": "p3a"}], "Phase 3's own Phase 1 baselines are not explained again"


STAMP = {"dataset": "fp-a", "split_key": "split-a"}


def test_stored_subjects_read_the_fold_tables_or_say_which_is_missing(tmp_path):
    subjects, notes = gradcam.stored_subjects(tmp_path, 0, STAMP)
    assert subjects == [] and len(notes) == 2
    assert "phase2_folds.csv not found (notebook 04" in notes[0] and "phase3_folds.csv not found" in notes[1]
    assert gradcam.stored_subjects(tmp_path, 0, STAMP, include_phase3=False)[1] == notes[:1]
    write_stamped_table(tmp_path / "phase2_folds.csv", _phase2_folds(), STAMP)
    write_stamped_table(tmp_path / "phase3_folds.csv", _phase3_folds(), STAMP)
    subjects, notes = gradcam.stored_subjects(tmp_path, 0, STAMP, ["baseline"])
    assert [s["run_key"] for s in subjects] == ["p2a", "p3a"] and notes == []
    subjects, _ = gradcam.stored_subjects(tmp_path, 0, STAMP, ["baseline"], include_phase3=False)
    assert [s["run_key"] for s in subjects] == ["p2a"]


@pytest.mark.parametrize("table", ["phase2_folds.csv", "phase3_folds.csv"])
def test_stored_subjects_refuse_fold_tables_of_another_dataset_or_split(tmp_path, table):
    write_stamped_table(tmp_path / "phase2_folds.csv", _phase2_folds(), STAMP)
    write_stamped_table(tmp_path / "phase3_folds.csv", _phase3_folds(), STAMP)
    other = {**STAMP, "dataset": "fp-b"}
    write_stamped_table(tmp_path / table, _phase2_folds() if table.startswith("phase2") else _phase3_folds(), other)
    with pytest.raises(ArtefactMismatch, match="fp-b") as err:
        gradcam.stored_subjects(tmp_path, 0, STAMP)
    assert "fp-a" in str(err.value) and table in str(err.value)
    write_table(tmp_path / table, _phase2_folds())  # unstamped (an older notebook's table): refused as well
    (tmp_path / f"{table}.stamp.json").unlink()
    with pytest.raises(ArtefactMismatch, match="no record"):
        gradcam.stored_subjects(tmp_path, 0, STAMP)


def test_architecture_subjects_train_each_size_on_the_one_fold(monkeypatch):
    from lib.training import runstore

    calls = []

    def fake_many(dataset, splits, jobs, folds=None):
        calls.append((jobs, folds))
        return [pd.DataFrame({"model": [job.model], "run_key": [f"{job.model}@{job.recipe.size}"]}) for job in jobs]

    monkeypatch.setattr(runstore, "run_cv_many", fake_many)
    subjects = gradcam.architecture_subjects(None, None, TrainConfig(epochs=1), 2,
                                             [(128, ["cnn", "npr"]), (32, []), (64, ["npr"])])
    assert len(calls) == 1 and calls[0][1] == [2], "every size's runs go to the executor together, fold 2 only"
    assert [job.recipe for job in calls[0][0]] == [Recipe(size=128), Recipe(size=128), Recipe(size=64)]
    assert [s["subject"] for s in subjects] == ["cnn · 128 px", "npr · 128 px", "npr · 64 px"]
    assert subjects[0] == {"subject": "cnn · 128 px", "group": "architectures", "condition": "resize_128",
                           "model": "cnn", "run_key": "cnn@128"}


def test_subject_table_lists_each_run_once():
    a = [{"subject": "x · baseline", "group": "Phase 2", "condition": "baseline", "model": "x", "run_key": "k1"}]
    b = [{"subject": "x · 64 px", "group": "architectures", "condition": "resize_64", "model": "x", "run_key": "k1"},
         {"subject": "y · 64 px", "group": "architectures", "condition": "resize_64", "model": "y", "run_key": "k2"}]
    table = gradcam.subject_table(a, b)
    assert table["subject"].tolist() == ["x · baseline", "y · 64 px"] and table.index.tolist() == [0, 1]
    assert list(table.columns) == gradcam.SUBJECT_COLUMNS
    assert gradcam.subject_table([], []).empty


# ----------------------------------------------------------------------------------------------- explanations

def _explanation(subject: str, size: int = 16, n: int = 4, grid: tuple[int, int] = (4, 4),
                 methods: tuple[str, ...] = ("gradcam", "gradcam++")) -> gradcam.RunExplanation:
    rng = np.random.default_rng(len(subject))
    examples = pd.DataFrame({"row": range(n), "path": [f"{subject}_{i}.png" for i in range(n)],
                             "source": "s", "label": [i % 2 for i in range(n)], "probability": 0.6,
                             "cell": ["real correct", "fake correct"] * (n // 2), "correct": True})
    energy = pd.concat([examples[["row", "label"]].assign(method=m, image_size=size, border_share=0.5,
                                                          face_share=np.nan, face_area_share=np.nan)
                        for m in methods], ignore_index=True)
    return gradcam.RunExplanation(f"key-{subject}", "simple_cnn", Recipe(size=size), grid, examples,
                                  rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                                  {m: rng.random((n, size, size)) for m in methods}, energy)


def _subjects() -> pd.DataFrame:
    return gradcam.subject_table([
        {"subject": "a · baseline", "group": "Phase 2", "condition": "baseline", "model": "a", "run_key": "k1"},
        {"subject": "b · Phase 3", "group": "Phase 3", "condition": "phase3", "model": "b", "run_key": "k2"},
        {"subject": "c · 32 px", "group": "architectures", "condition": "resize_32", "model": "c", "run_key": "k3"},
        {"subject": "d · 64 px", "group": "architectures", "condition": "resize_64", "model": "d", "run_key": "k4"}])


def test_explain_subjects_separates_explained_and_skipped_runs(monkeypatch):
    asked = []

    def fake_explain_run(run_key, dataset, n_per_cell, seed, methods, border_frac, face_boxes, min_cells=2):
        asked.append((run_key, n_per_cell, min_cells))
        return "1x1 map" if run_key == "k3" else _explanation(run_key)

    monkeypatch.setattr(gradcam, "explain_run", fake_explain_run)
    explanations, skipped = gradcam.explain_subjects(_subjects(), None, n_per_cell=3, min_cells=5, progress=False)
    assert list(explanations) == ["a · baseline", "b · Phase 3", "d · 64 px"]
    assert skipped == {"c · 32 px": "1x1 map"}
    assert asked[0] == ("k1", 3, 5) and len(asked) == 4


def test_energy_table_tags_subjects_and_the_uniform_border_share():
    explanations = {"a · baseline": _explanation("a", size=16), "d · 64 px": _explanation("d", size=64)}
    energy = gradcam.energy_table(explanations, _subjects(), border_frac=0.25)
    assert len(energy) == 16 and set(energy["subject"]) == set(explanations)
    assert set(energy.loc[energy["subject"] == "d · 64 px", "group"]) == {"architectures"}
    assert set(energy["border_expected"]) == {expected_border_share(16, 16, 0.25), expected_border_share(64, 64, 0.25)}
    notes = gradcam.explanation_notes(explanations, {"c · 32 px": "1x1 map"}, energy, n_methods=2)
    assert notes == ["explained 2 runs (8 images); skipped 1:", "  c · 32 px: 1x1 map"]
    status = gradcam.subject_status(_subjects(), explanations)
    assert status["explained"].tolist() == [True, False, False, True]
    assert status["cam_grid"].tolist()[0] == "4x4" and status["cam_grid"].isna().tolist() == [False, True, True, False]


def test_cam_figures_one_per_group_and_one_for_the_methods(tmp_path):
    import matplotlib.pyplot as plt

    explanations = {k: _explanation(k) for k in ("a · baseline", "c · 32 px", "d · 64 px")}
    paths = gradcam.plot_group_cams(_subjects(), explanations, "gradcam", n_show=3, figures=tmp_path)
    assert [p.name for p in paths] == ["gradcam_phase_0.png", "gradcam_architectures_1.png"]
    methods = gradcam.plot_method_comparison(explanations, ["gradcam", "gradcam++"], 3, tmp_path / "m.png")
    plt.close("all")
    assert methods == [tmp_path / "m.png"] and all(p.is_file() for p in [*paths, *methods])
    assert gradcam.plot_method_comparison(explanations, ["gradcam"], 3, tmp_path / "x.png") == []
    assert gradcam.plot_method_comparison({}, ["gradcam", "gradcam++"], 3, tmp_path / "x.png") == []


# ----------------------------------------------------------------------------------------------- comparisons

def _energy(seed: int = 0) -> pd.DataFrame:
    """Two Phase 2 conditions of model m (augment puts more energy on the border) and an architectures run."""
    rng = np.random.default_rng(seed)
    rows = []
    for subject, group, condition, border in (("m · baseline", "Phase 2", "baseline", 0.3),
                                              ("m · augment", "Phase 2", "augment", 0.6),
                                              ("n · 64 px", "architectures", "resize_64", 0.4)):
        for i in range(12):
            has_face = i % 3 != 0
            rows.append({"subject": subject, "group": group, "condition": condition, "method": "gradcam",
                         "label": i % 2, "border_share": border + rng.normal(0, 0.02),
                         "face_share": 0.5 + rng.normal(0, 0.02) if has_face else np.nan,
                         "face_area_share": 0.3 if has_face else np.nan})
    return pd.DataFrame(rows)


def test_face_excess_uses_only_images_with_a_face():
    face = gradcam.face_excess(_energy())
    assert face["subject"].tolist() == ["m · baseline", "m · augment", "n · 64 px"]
    assert (face["n"] == 8).all() and (face["finding"] == "above uniform").all()
    assert face["expected"].tolist() == pytest.approx([0.3] * 3)
    assert gradcam.face_excess(_energy().assign(face_share=np.nan)).empty


def test_condition_comparisons_pair_each_condition_with_the_reference_for_the_same_model():
    table = gradcam.condition_comparisons(_energy(), "baseline")
    assert table["value"].tolist() == ["border_share", "face_share"]
    assert (table["model_name"] == "m").all() and (table["a"] == "augment").all() and (table["b"] == "baseline").all()
    border = table.iloc[0]
    assert border["diff"] == pytest.approx(0.3, abs=0.03) and border["p_holm"] < 0.05
    assert gradcam.condition_comparisons(_energy().query("group != 'Phase 2'"), "baseline").empty


# ----------------------------------------------------------------------------------------------- conclusions

def _border() -> pd.DataFrame:
    return pd.DataFrame({"group": ["Phase 2", "Phase 2", "architectures", "Phase 2"],
                         "subject": ["m · baseline", "m · augment", "n · 64 px", "m · baseline"],
                         "method": ["gradcam", "gradcam", "gradcam", "gradcam++"], "n": 12,
                         "mean_border_share": [0.3, 0.6, 0.4, 0.3], "expected": 0.51,
                         "mean_excess": [-0.2, 0.1, -0.1, -0.2],
                         "excess_ci_low": 0.0, "excess_ci_high": 0.0, "wilcoxon_p": 0.01,
                         "finding": ["below uniform", "above uniform", "below uniform", "below uniform"]})


def test_conclusions_follow_the_numbers():
    face = pd.DataFrame({"subject": ["m · baseline", "m · augment"], "method": "gradcam",
                         "finding": ["above uniform", "not different"], "mean_excess": [0.2, -0.01]})
    real_fake = pd.DataFrame({"subject": ["m · baseline", "m · augment", "n · 64 px"], "method": "gradcam",
                              "mean_a": [0.4, 0.5, 0.6], "mean_b": [0.2, 0.5, 0.6], "p_holm": [0.01, 0.9, np.nan]})
    conditions = pd.DataFrame({"model_name": ["m", "m"], "method": "gradcam", "value": ["border_share", "face_share"],
                               "a": "augment", "b": "baseline", "mean_a": [0.6, 0.5], "mean_b": [0.3, 0.5],
                               "diff": [0.3, 0.0], "p_holm": [0.001, 0.9]})
    lines = gradcam.conclusions(3, {"x · 32 px": "1x1"}, 0, 4, _border(), face, real_fake, conditions, "gradcam")
    assert lines == [
        "Explained 3 runs (fold 0, up to 16 test images each); skipped 1: x · 32 px.",
        "gradcam border energy above uniform (95 % CI of share - area share): m · augment.",
        "gradcam border energy below uniform (95 % CI of share - area share): m · baseline, n · 64 px.",
        "gradcam energy inside the face box vs its area: m · baseline above uniform (+0.200); "
        "m · augment not different (-0.010).",
        "Border share differs between real and fake (Mann-Whitney, Holm p < 0.05) for 1 of 3 runs: "
        "m · baseline (fake 0.400 vs real 0.200).",
        "m: augment puts 0.600 of the energy on the border vs 0.300 for baseline (significantly more; "
        "Holm p = 0.001).",
    ]
    quiet = gradcam.conclusions(3, {}, 1, 2, _border(), pd.DataFrame(), real_fake.assign(p_holm=0.5),
                                pd.DataFrame(), "gradcam")
    assert quiet[0] == "Explained 3 runs (fold 1, up to 8 test images each); skipped 0."
    assert quiet[-1] == "Border share differs between real and fake (Mann-Whitney, Holm p < 0.05) for 0 of 3 runs."
    assert len(quiet) == 4


def test_condition_line_says_which_way_the_border_share_moved():
    row = pd.DataFrame({"model_name": ["m"], "a": "augment", "b": "baseline", "mean_a": 0.2, "mean_b": 0.3,
                        "diff": -0.1, "p_holm": [0.01]})
    assert "(significantly less; Holm p = 0.01)" in gradcam.condition_line(next(row.itertuples()))
    row["p_holm"] = 0.2
    assert "(not significantly differently; Holm p = 0.2)" in gradcam.condition_line(next(row.itertuples()))


def test_headline_table_is_the_border_table_of_one_method():
    table = gradcam.headline_table(_border(), "gradcam")
    assert table["subject"].tolist() == ["m · baseline", "m · augment", "n · 64 px"]
    assert list(table.columns) == ["subject", "n", "mean_border_share", "expected", "mean_excess", "excess_ci_low",
                                   "excess_ci_high", "finding"]
