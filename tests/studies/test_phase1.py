"""Phase 1 study functions (notebook 03): study description, fold summaries, tests against the reference and
conclusions, on small synthetic tables."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from lib.studies import phase1

METRICS = ("auc", "ap", "accuracy", "f1")


def fold_table(test_auc: dict[str, list[float]]) -> pd.DataFrame:
    """A `run_cv`-like fold table: one row per (model, fold); every other metric derived from the test AUC."""
    rows = []
    for model, aucs in test_auc.items():
        for fold, auc in enumerate(aucs):
            row = {"model": model, "fold": fold, "run_key": f"{model}-{fold}"}
            for part, shift in (("test", 0.0), ("val", -0.05)):
                row.update({f"{part}_{m}": auc + shift - 0.01 * i for i, m in enumerate(METRICS)})
            rows.append(row)
    return pd.DataFrame(rows)


def prediction_table(strength: dict[str, float], n_folds: int = 3, n_images: int = 40, seed: int = 0) -> pd.DataFrame:
    """Validation and shared test predictions of every fold model; a higher `strength` separates the classes more."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) % 2
    rows = []
    for model, s in strength.items():
        for fold in range(n_folds):
            for split in ("val", "test"):
                prob = 1 / (1 + np.exp(-(s * (2 * labels - 1) + rng.normal(0, 1, n_images))))
                rows.append(pd.DataFrame({
                    "model": model, "fold": fold, "split": split, "label": labels, "probability": prob,
                    "source": np.where(labels == 1, "fake_a", "real"),
                    "path": [f"{split}-{fold if split == 'val' else 'shared'}-{i}.png" for i in range(n_images)]}))
    return pd.concat(rows, ignore_index=True)


def test_describe_study_counts_images_folds_and_the_test_hold_out():
    splits = pd.DataFrame({"split": ["trainval"] * 6 + ["test"] * 2, "fold": [0, 0, 1, 1, 2, 2, -1, -1]})
    study = SimpleNamespace(manifest=pd.DataFrame(index=range(8)), splits=splits)
    assert phase1.describe_study(study) == "8 images, 3 folds, test hold-out of 2 images"


def test_summaries_add_parameter_counts_and_validation_columns():
    cv = fold_table({"small": [0.7, 0.8, 0.75], "big": [0.9, 0.85, 0.95]})
    summary, table, val_table = phase1.summaries(cv, {"small": 100, "big": 2_000})
    assert list(dict.fromkeys(summary["model"])) == ["small", "big"]
    assert set(summary["metric"]) == set(METRICS)
    assert np.isclose(summary.set_index(["model", "metric"]).loc[("big", "auc"), "mean"], 0.9)
    assert list(table.index) == ["small", "big"] and table["parameters"].tolist() == [100, 2_000]
    assert list(val_table.columns) == [f"val_{m}" for m in METRICS]
    assert val_table.loc["small", "val_auc"].startswith("0.700 ± ")


def test_significance_tests_compare_every_model_to_the_first():
    cv = fold_table({"ref": [0.6, 0.62, 0.61], "a": [0.8, 0.83, 0.81], "b": [0.6, 0.64, 0.6]})
    predictions = prediction_table({"ref": 0.5, "a": 3.0, "b": 0.5})
    paired, test_set = phase1.significance_tests(cv, predictions, ["ref", "a", "b"])
    assert paired[["a", "b", "metric"]].values.tolist() == [["a", "ref", "test_auc"], ["a", "ref", "test_accuracy"],
                                                            ["b", "ref", "test_auc"], ["b", "ref", "test_accuracy"]]
    assert (paired["t_p_holm"] >= paired["t_p"] - 1e-12).all(), "Holm over the whole family"
    assert paired.loc[0, "verdict"] == "supported"
    assert test_set[["a", "b"]].values.tolist() == [["a", "ref"], ["b", "ref"]]
    assert (test_set["n_test"] == 40).all() and test_set["delong_p"].notna().all()
    assert test_set.loc[0, "delong_auc1"] > test_set.loc[0, "delong_auc2"]


def test_conclusions_are_computed_from_the_tables():
    summary = pd.DataFrame([
        {"model": "ref", "metric": "auc", "mean": 0.6, "std": 0.02, "ci_low": 0.45, "ci_high": 0.75, "n": 3},
        {"model": "big", "metric": "auc", "mean": 0.9, "std": 0.01, "ci_low": 0.85, "ci_high": 0.95, "n": 3},
        {"model": "big", "metric": "ap", "mean": 0.1, "std": 0.0, "ci_low": 0.1, "ci_high": 0.1, "n": 3}])
    paired = pd.DataFrame([
        {"a": "big", "b": "ref", "metric": "test_auc", "n": 3, "mean_diff": 0.3, "diff_ci_low": 0.2,
         "diff_ci_high": 0.4, "t_p": 0.01, "t_p_holm": 0.02, "verdict": "supported"},
        {"a": "big", "b": "ref", "metric": "test_accuracy", "n": 3, "mean_diff": 0.1, "diff_ci_low": -0.1,
         "diff_ci_high": 0.3, "t_p": 0.2, "t_p_holm": 0.2, "verdict": "inconclusive"}])
    test_set = pd.DataFrame([
        {"a": "big", "b": "ref", "n_test": 40, "delong_auc1": 0.91, "delong_auc2": 0.62, "delong_p": 0.0012,
         "mcnemar_p": 0.03},
        {"a": "big", "b": "ref", "n_test": 10, "note": "test set has one class"}])  # no DeLong: no sentence
    lines = phase1.conclusions(summary, {"ref": 1_234, "big": 5_000_000}, paired, test_set)
    assert lines == [
        "ref (1,234 parameters): test AUC 0.600 ± 0.020 (95 % CI 0.450-0.750, 3 folds).",
        "big (5,000,000 parameters): test AUC 0.900 ± 0.010 (95 % CI 0.850-0.950, 3 folds).",
        "Paired over folds: big - ref AUC: +0.300 (95 % CI +0.200 to +0.400, n = 3 folds, paired t p = 0.02 Holm) "
        "-> claim 'big better than ref': supported",
        "DeLong on the 40 test images (fold ensembles): AUC big 0.910 vs ref 0.620, p = 0.0012; McNemar p = 0.03.",
        "Above chance (CI lower bound > 0.5): ref no, big yes.",
    ]
