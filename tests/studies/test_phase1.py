"""Phase 1 study functions (notebook 03): study description, the descriptive fold summaries, the headline intervals
over groups, the comparisons with the reference by the one comparison rule, the image-level tests only where groups
are images, and the computed conclusions, on small synthetic tables."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
from lib.evaluation import compare
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


def grouped_predictions(strength: dict[str, float | dict[str, float]], n_groups: int = 12, copies: int = 3,
                        n_folds: int = 3, seed: int = 0) -> pd.DataFrame:
    """`collect_predictions`-like rows: `n_groups` real and `n_groups` fake trainval groups (each validated by one
    fold model), 4 + 4 test groups scored by every fold model; `copies` images per group. A higher strength separates
    the classes more; a dict gives one strength per split ("val", "test")."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, s in strength.items():
        s = s if isinstance(s, dict) else {"val": s, "test": s}
        for split, groups in (("val", range(2 * n_groups)), ("test", range(100, 108))):
            for g in groups:
                label = int(g % 2)
                folds = [g % n_folds] if split == "val" else range(n_folds)
                for fold in folds:
                    for c in range(copies):
                        z = s[split] * (2 * label - 1) + rng.normal(0, 1)
                        rows.append({"model": model, "run_key": f"{model}-{fold}", "fold": fold, "split": split,
                                     "path": f"g{g}_{c}.png", "label": label, "group": f"g{g}",
                                     "source": "fake_a" if label else "real", "probability": 1 / (1 + np.exp(-z))})
    return pd.DataFrame(rows)


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


def test_intervals_are_over_groups_inside_the_metric_range_and_tabled_with_counts():
    table = phase1.intervals(grouped_predictions({"ref": 0.3, "strong": 3.0}))
    assert set(table["set"]) == {"oof", "test"} and set(table["metric"]) == {"auc", "accuracy"}
    assert ((table["ci_low"] >= 0) & (table["ci_high"] <= 1)).all()
    oof = table[table["set"] == "oof"]
    assert (oof["real_groups"] == 12).all() and (oof["fake_groups"] == 12).all() and (oof["real_images"] == 36).all()
    wide = phase1.interval_table(table)
    assert list(wide.index) == ["ref", "strong"]
    assert list(wide.columns) == ["oof AUC", "oof accuracy", "oof groups", "test AUC", "test accuracy", "test groups"]
    assert wide.loc["strong", "oof groups"] == "12 real / 12 fake groups"
    assert wide.loc["strong", "test groups"] == "4 real / 4 fake groups"
    assert wide.loc["strong", "oof AUC"].count("[") == 1
    headline = phase1.headline_table(table, {"ref": 10, "strong": 20})
    assert headline["model"].tolist() == ["ref", "strong"] and headline["parameters"].tolist() == [10, 20]


def test_comparisons_follow_the_one_rule_on_oof_and_test():
    predictions = grouped_predictions({"ref": 0.2, "strong": 3.0, "same": 0.2})
    family = phase1.comparisons(predictions, ["ref", "strong", "same"])
    assert set(family["set"]) == {"oof", "test"} and set(family["metric"]) == {"auc", "accuracy"}
    assert (family["b"] == "ref").all() and set(family["a"]) == {"strong", "same"}
    strong = family[(family["a"] == "strong") & (family["set"] == "oof") & (family["metric"] == "auc")].iloc[0]
    assert strong["verdict"] == "supported" and strong["ci_low"] > 0 and strong["real_groups"] == 12
    assert (family["p_holm"] >= family["p"] - 1e-12).all()


def test_fold_level_tests_are_secondary_nadeau_bengio_without_an_unreachable_wilcoxon():
    cv = fold_table({"ref": [0.6, 0.62, 0.61], "a": [0.8, 0.83, 0.81]})
    folds = phase1.fold_level_tests(cv, [("a", "ref")])
    assert folds.loc[0, "metric"] == "val_auc" and folds.loc[0, "nb_ci_low"] > 0
    assert np.isnan(folds.loc[0, "wilcoxon_p"]) and "0.25" in folds.loc[0, "wilcoxon_note"]
    line = phase1.fold_test_line(folds.iloc[0])
    assert line.startswith("Secondary, over 3 folds (Nadeau-Bengio") and "Wilcoxon omitted" in line
    assert phase1.fold_level_tests(cv, []).empty


def test_image_level_tests_only_where_groups_are_single_images():
    grouped = grouped_predictions({"ref": 0.3, "strong": 3.0})
    table, note = phase1.image_level_tests(grouped, [("strong", "ref")])
    assert table.empty and note.startswith("DeLong and McNemar omitted: the test hold-out's 24 images come from 4 real "
                                           "and 4 fake groups")
    assert phase1.image_test_table(table, note)["note"].tolist() == [note]
    single = grouped_predictions({"ref": 0.3, "strong": 3.0}, copies=1)
    single["group"] = single["path"]
    table, note = phase1.image_level_tests(single, [("strong", "ref")])
    assert note == "" and table[["a", "b"]].values.tolist() == [["strong", "ref"]] and table["delong_p"].notna().all()
    empty, none = phase1.image_level_tests(single, [])
    assert empty.empty and none == ""


def interval_rows(model: str, oof: tuple[float, float, float], test: tuple[float, float, float]) -> list[dict]:
    return [{"model": model, "set": s, "metric": "auc", "estimate": e, "ci_low": lo, "ci_high": hi,
             "real_groups": r, "fake_groups": f, "note": ""}
            for s, (e, lo, hi), (r, f) in (("oof", oof, (8, 24)), ("test", test, (3, 9)))]


def test_conclusions_are_computed_from_the_tables():
    table = pd.DataFrame(interval_rows("ref", (0.6, 0.45, 0.75), (0.55, float("nan"), float("nan")))
                         + interval_rows("big", (0.9, 0.85, 0.95), (0.8, 0.6, 0.9)))
    family = pd.DataFrame([{"a": "big", "b": "ref", "set": "oof", "metric": "auc", "claim": "big > ref",
                            "estimate_a": 0.9, "estimate_b": 0.6, "diff": 0.3, "ci_low": 0.2, "ci_high": 0.4,
                            "level": 0.95, "p": 0.001, "p_holm": 0.002, "verdict": "supported", "real_groups": 8,
                            "fake_groups": 24, "note": ""},
                           {"a": "big", "b": "ref", "set": "oof", "metric": "accuracy", "diff": 0.1}])
    folds = pd.DataFrame([{"a": "big", "b": "ref", "n_folds": 3, "nb_mean_diff": 0.25, "nb_ci_low": 0.1,
                           "nb_ci_high": 0.4, "nb_p": 0.03, "nb_note": "", "wilcoxon_p": float("nan"),
                           "wilcoxon_note": "omitted: with 3 folds the smallest attainable Wilcoxon p is 0.25 > 0.05"}])
    lines = phase1.conclusions(table, {"ref": 1_234, "big": 5_000_000}, family, folds, pd.DataFrame(),
                               "DeLong omitted.")
    assert lines == [
        "ref (1,234 parameters): AUC on out-of-fold validation 0.600 [0.450, 0.750]; 8 real / 24 fake groups; on the "
        "test hold-out 0.550; 3 real / 9 fake groups (no interval: fewer than 2 groups of a class).",
        "big (5,000,000 parameters): AUC on out-of-fold validation 0.900 [0.850, 0.950]; 8 real / 24 fake groups; on "
        "the test hold-out 0.800 [0.600, 0.900]; 3 real / 9 fake groups.",
        compare.describe_family_row(family.iloc[0]),  # the AUC row only; its wording is compare's
        "Secondary, over 3 folds (Nadeau-Bengio corrected t, validation AUC): big - ref +0.250 (95 % CI +0.100 to "
        "+0.400, p = 0.03); Wilcoxon omitted: with 3 folds the smallest attainable Wilcoxon p is 0.25 > 0.05.",
        "DeLong omitted.",
        "Above chance (lower bound of the 95 % group-bootstrap AUC interval > 0.5) on out-of-fold validation: ref no, "
        "big yes; on the test hold-out: ref undefined, big yes.",
    ]
    delong = pd.DataFrame([{"a": "big", "b": "ref", "n_test": 40, "delong_auc1": 0.91, "delong_auc2": 0.62,
                            "delong_p": 0.0012, "mcnemar_p": 0.03}])
    assert phase1.image_test_lines(delong, "") == [
        "DeLong on the 40 test images (groups are single images; fold ensembles): AUC big 0.910 vs ref 0.620, "
        "p = 0.0012; McNemar p = 0.03."]
