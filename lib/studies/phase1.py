"""Phase 1 (notebook 03): controlled baselines. Every model is trained (or loaded) on every fold of the shared split
table with one recipe and one training configuration; this module runs them and reads them by the study protocol
(`lib.evaluation.compare`):

- headline numbers: AUC and accuracy on the pooled out-of-fold validation predictions ("oof", every trainval group
  validated once) and on the test hold-out, each with its cluster-bootstrap interval over groups and the group counts
  behind it (`intervals`, `interval_table`);
- paired claims: every model against the first (the reference) by the one comparison rule (`comparisons`,
  `compare_family` on oof and test); the fold-level Nadeau-Bengio t as a secondary view (`fold_level_tests`);
  DeLong/McNemar only where every group is one image (`image_level_tests`, which otherwise says why they are omitted);
- the conclusion lines computed from those numbers and the notebook's headline for the index page.

Notebooks 05 and 06 reuse the interval table, the image-level tests and the sentence builders.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from lib.data.recipes import Recipe
from lib.data.splits import fold_ids
from lib.evaluation import compare
from lib.fileio import write_json
from lib.paths import figures_dir, tables_dir
from lib.report import save_headline
from lib.studies.common import Study
from lib.training.fit import TrainConfig

NOTEBOOK = "03_phase1_baselines"
TITLE = "03 · Phase 1: controlled baselines"
HEADLINE_FIGURES = ("phase1_curves.png", "phase1_roc_pr.png")
SETS = ("oof", "test")
HEADLINE_METRICS = ("auc", "accuracy")
SET_NAMES = {"oof": "out-of-fold validation", "test": "the test hold-out", "holdout": "the held-out sources"}
METRIC_NAMES = {"auc": "AUC", "accuracy": "accuracy"}
# columns shown by the notebook (the saved tables keep every column)
FOLD_COLUMNS = ["model", "fold", "trained", "epochs", "best_epoch", "seconds", "val_auc", "test_auc", "test_accuracy"]
FAMILY_COLUMNS = ["set", "metric", "claim", "estimate_a", "estimate_b", "diff", "ci_low", "ci_high", "level", "p_holm",
                  "verdict", "real_groups", "fake_groups"]
FOLD_TEST_COLUMNS = ["a", "b", "metric", "n_folds", "nb_mean_diff", "nb_ci_low", "nb_ci_high", "nb_p", "wilcoxon_note"]


def describe_study(study: Study) -> str:
    """`N images, F folds, test hold-out of T images`."""
    n_test = int((study.splits["split"] == "test").sum())
    return f"{len(study.manifest)} images, {len(fold_ids(study.splits))} folds, test hold-out of {n_test} images"


def describe_setup(study: Study, recipe: Recipe, config: TrainConfig) -> str:
    """The study, the recipe and the training configuration, on one line."""
    return f"{describe_study(study)}; recipe {recipe}; {config}"


def run_models(dataset: Any, splits: pd.DataFrame, recipe: Recipe, config: TrainConfig, models: Sequence[str],
               **store_kw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`run_cv` for every model in order (stored runs are loaded): (fold table, predictions).
    `store_kw`: runs_dir, cache_dir (default: the project's run store and cache)."""
    from lib.training.runstore import CVJob, collect_predictions, run_cv_many

    cv = pd.concat(run_cv_many(dataset, splits, [CVJob(recipe, name, config) for name in models], **store_kw),
                   ignore_index=True)
    runs_dir = {k: v for k, v in store_kw.items() if k == "runs_dir"}
    return cv, collect_predictions(cv, **runs_dir)


def parameter_counts(models: Sequence[str]) -> dict[str, int]:
    """Trainable size of each model as the registry builds it, in the order given."""
    from lib.models import count_parameters, create_model

    return {name: count_parameters(create_model(name)) for name in models}


def summaries(cv: pd.DataFrame, parameters: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The descriptive training-noise view (fold models' own scores, mean ± std and t-interval over folds):
    (long test summary, wide test table with a `parameters` column, wide validation table with `val_` columns).
    Headline numbers and verdicts come from `intervals` and `comparisons`, not from these."""
    summary = compare.cv_summary(cv, by="model", part="test")
    table = compare.summary_wide(summary, by="model").assign(parameters=pd.Series(parameters))
    val_table = compare.summary_wide(compare.cv_summary(cv, by="model", part="val"), by="model").add_prefix("val_")
    return summary, table, val_table


# ----------------------------------------------------------------------------------------------- headline numbers

def intervals(predictions: pd.DataFrame, by: str = "model", sets: Sequence[str] = SETS,
              metrics: Sequence[str] = HEADLINE_METRICS) -> pd.DataFrame:
    """`compare.metric_intervals`: per level, set and metric the estimate, its group-bootstrap interval and the group
    counts (accuracy at thresholds chosen on validation)."""
    return compare.metric_intervals(predictions, by, sets=sets, metrics=metrics)


def estimate_text(row: dict | pd.Series, digits: int = 3) -> str:
    """'0.905 [0.812, 0.961]' (the interval left out when undefined)."""
    return compare.interval_text(row, digits).split(";")[0]


def interval_table(table: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """A `metric_intervals` table as one row per level of `by` (in order of appearance): a column
    '<set> <metric>' with the estimate and its interval and a column '<set> groups' with the group counts."""
    out: dict[str, dict[str, str]] = {}
    for _, row in table.iterrows():
        name = f"{row['set']} {METRIC_NAMES.get(row['metric'], row['metric'])}"
        out.setdefault(name, {})[row[by]] = estimate_text(row)
        out.setdefault(f"{row['set']} groups", {})[row[by]] = compare.counts_text(row)
    order = []
    for s in dict.fromkeys(table["set"]):
        order += [c for c in out if c.startswith(f"{s} ") and c != f"{s} groups"] + [f"{s} groups"]
    levels = list(dict.fromkeys(table[by]))
    return pd.DataFrame(out).reindex(index=levels, columns=order).rename_axis(by)


def headline_line(name: str, table: pd.DataFrame, metric: str = "auc") -> str:
    """'name: AUC on out-of-fold validation 0.905 [0.812, 0.961]; 8 real / 24 fake groups; on the test hold-out ...'
    from the `metric_intervals` rows of one level."""
    parts = []
    for _, row in table[table["metric"] == metric].iterrows():
        text = compare.interval_text(row)
        if pd.isna(row["ci_low"]):
            text += " (no interval: fewer than 2 groups of a class)"
        parts.append(f"on {SET_NAMES.get(row['set'], row['set'])} {text}")
    return f"{name}: {METRIC_NAMES.get(metric, metric)} " + "; ".join(parts) + "."


def chance_line(table: pd.DataFrame, levels: Sequence[str], by: str = "model", sets: Sequence[str] = SETS) -> str:
    """Whether each level's AUC interval lies above 0.5, per evaluation set."""
    auc = table[table["metric"] == "auc"].set_index([by, "set"])
    parts = []
    for name in sets:
        verdicts = []
        for level in levels:
            low = auc["ci_low"].get((level, name), math.nan)
            verdicts.append(f"{level} {'undefined' if pd.isna(low) else ('yes' if low > 0.5 else 'no')}")
        parts.append(f"on {SET_NAMES.get(name, name)}: {', '.join(verdicts)}")
    return "Above chance (lower bound of the 95 % group-bootstrap AUC interval > 0.5) " + "; ".join(parts) + "."


# ----------------------------------------------------------------------------------------------- paired claims

def reference_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(model, reference) for every model after the first (the reference)."""
    return [(m, models[0]) for m in models[1:]]


def comparisons(predictions: pd.DataFrame, models: Sequence[str], by: str = "model", sets: Sequence[str] = SETS,
                metrics: Sequence[str] = HEADLINE_METRICS) -> pd.DataFrame:
    """Every model against the first by the one comparison rule (`compare_family`, one Holm family per set)."""
    return compare.compare_family(predictions, by, reference_pairs(models), sets=sets, metrics=metrics)


def fold_level_tests(cv: pd.DataFrame, pairs: Sequence[tuple[str, str]], by: str = "model") -> pd.DataFrame:
    """Secondary, training-noise view: `compare.fold_tests` (Nadeau-Bengio corrected t) on the validation AUC."""
    if not pairs:
        return pd.DataFrame(columns=FOLD_TEST_COLUMNS)
    return compare.fold_tests(cv, by, pairs, metric="val_auc")


def fold_test_line(row: dict | pd.Series) -> str:
    """One sentence about a `fold_tests` row (always labelled secondary)."""
    if pd.isna(row["nb_ci_low"]):
        result = f"{row['nb_mean_diff']:+.3f} (no interval: {row['nb_note']})"
    else:
        result = (f"{row['nb_mean_diff']:+.3f} (95 % CI {row['nb_ci_low']:+.3f} to {row['nb_ci_high']:+.3f}, "
                  f"p = {row['nb_p']:.3g})")
    note = row.get("wilcoxon_note")
    wilcoxon = note if isinstance(note, str) and note else f"p = {row['wilcoxon_p']:.3g}"
    return (f"Secondary, over {int(row['n_folds'])} folds (Nadeau-Bengio corrected t, validation AUC): "
            f"{row['a']} - {row['b']} {result}; Wilcoxon {wilcoxon}.")


def image_level_tests(predictions: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                      by: str = "model") -> tuple[pd.DataFrame, str]:
    """DeLong and McNemar of each pair's fold ensembles on the test hold-out, only where every group is one image
    (`groups_are_images`); otherwise an empty table and the computed line saying why they are omitted."""
    if not pairs:
        return pd.DataFrame(), ""
    test = compare.evaluation_set(predictions, by, "test")
    images = test.drop_duplicates("path")
    if not len(images):
        return pd.DataFrame(), "DeLong and McNemar omitted: no test hold-out predictions."
    if not compare.groups_are_images(images):
        c = compare.group_counts(images)
        return pd.DataFrame(), (
            f"DeLong and McNemar omitted: the test hold-out's {len(images)} images come from {c['real_groups']} real "
            f"and {c['fake_groups']} fake groups, so its images are not independent units; the paired group "
            f"bootstrap above is the test.")
    return pd.DataFrame([compare.test_set_comparison(predictions, by, a, b) for a, b in pairs]), ""


def image_test_table(test_set: pd.DataFrame, note: str) -> pd.DataFrame:
    """What the notebook shows and saves for the image-level tests: their rows, or the omission note as a table."""
    return test_set if len(test_set) or not note else pd.DataFrame({"note": [note]})


def delong_line(row: pd.Series) -> str:
    """One sentence about the DeLong and McNemar tests of a `test_set_comparison` row."""
    return (f"DeLong on the {int(row['n_test'])} test images (groups are single images; fold ensembles): "
            f"AUC {row['a']} {row['delong_auc1']:.3f} vs {row['b']} {row['delong_auc2']:.3f}, "
            f"p = {row['delong_p']:.3g}; McNemar p = {row['mcnemar_p']:.3g}.")


def family_lines(family: pd.DataFrame, metric: str = "auc") -> list[str]:
    """`describe_family_row` of each `metric` row of a `compare_family` table."""
    return [compare.describe_family_row(row, METRIC_NAMES.get(metric, metric))
            for _, row in family[family["metric"] == metric].iterrows()]


def image_test_lines(test_set: pd.DataFrame, note: str) -> list[str]:
    """The DeLong sentences where they were computed, else the omission note."""
    if note:
        return [note]
    # a one-class test set has no DeLong columns (or NaN): no sentence for it
    return [delong_line(row) for _, row in test_set.iterrows() if pd.notna(row.get("delong_p", math.nan))]


def conclusions(table: pd.DataFrame, parameters: dict[str, int], family: pd.DataFrame, folds: pd.DataFrame,
                test_set: pd.DataFrame, image_note: str) -> list[str]:
    """The computed conclusion lines: each model's AUC with interval and groups (models in the order of
    `parameters`), the paired AUC claims against the reference on oof and test, the secondary fold-level tests, the
    DeLong tests or why they are omitted, and whether each model is above chance."""
    lines = [headline_line(f"{name} ({count:,} parameters)", table[table["model"] == name])
             for name, count in parameters.items()]
    lines += family_lines(family)
    lines += [fold_test_line(row) for _, row in folds.iterrows()]
    lines += image_test_lines(test_set, image_note)
    lines.append(chance_line(table, list(parameters)))
    return lines


def headline_table(table: pd.DataFrame, parameters: dict[str, int]) -> pd.DataFrame:
    """The index page's table: per model its parameters, AUC and accuracy with intervals on oof and test, and the
    group counts behind them."""
    wide = interval_table(table)
    return wide.assign(parameters=pd.Series(parameters)).reset_index(names="model")


def save_conclusions(profile: str, conclusions: list[str], headline: pd.DataFrame, cv: pd.DataFrame) -> None:
    """Write `phase1_conclusions.json` (with the run keys) and the notebook's headline for the index page."""
    figures = figures_dir(profile)
    write_json(tables_dir(profile) / "phase1_conclusions.json",
               {"conclusions": conclusions, "run_keys": cv["run_key"].tolist()})
    save_headline(profile, NOTEBOOK, headline, title=TITLE, conclusions=conclusions,
                  figures=[figures / name for name in HEADLINE_FIGURES])
