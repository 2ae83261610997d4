"""Phase 1 (notebook 03): controlled baselines. Every model is trained (or loaded) on every fold of the shared split
table with one recipe and one training configuration; this module runs them, builds the fold summaries with parameter
counts, the paired tests against the first model (the reference) and the shared-test-set tests of the fold ensembles,
computes the conclusion lines from those numbers and records them for the index page. Notebook 05 reuses the study
description and the test-set comparisons.
"""

from __future__ import annotations

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
# columns shown by the notebook (the saved tables keep every column)
FOLD_COLUMNS = ["model", "fold", "trained", "epochs", "best_epoch", "seconds", "val_auc", "test_auc", "test_accuracy"]
TEST_COLUMNS = ["a", "b", "metric", "n", "mean_diff", "diff_ci_low", "diff_ci_high", "t_p", "t_p_holm", "wilcoxon_p",
                "verdict"]


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
    """(long test summary, wide test table with a `parameters` column, wide validation table with `val_` columns)."""
    summary = compare.cv_summary(cv, by="model", part="test")
    table = compare.summary_wide(summary, by="model").assign(parameters=pd.Series(parameters))
    val_table = compare.summary_wide(compare.cv_summary(cv, by="model", part="val"), by="model").add_prefix("val_")
    return summary, table, val_table


def test_set_comparisons(predictions: pd.DataFrame, others: Sequence[str], reference: str,
                         by: str = "model") -> pd.DataFrame:
    """DeLong and McNemar of each level in `others` against `reference` on the shared test set, one row each."""
    return pd.DataFrame([compare.test_set_comparison(predictions, by, other, reference) for other in others])


def significance_tests(cv: pd.DataFrame, predictions: pd.DataFrame, models: Sequence[str],
                       metrics: Sequence[str] = ("test_auc", "test_accuracy")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every model against the first (the reference): (paired fold tests, Holm over all rows; test-set tests)."""
    reference, others = models[0], list(models[1:])
    paired = compare.compare_to_baseline(cv, "model", reference, metrics=list(metrics), others=others)
    return paired, test_set_comparisons(predictions, others, reference)


def auc_line(name: str, parameters: int, auc: pd.Series) -> str:
    """`name (P parameters): test AUC mean ± std (95 % CI low-high, n folds).` from a `cv_summary` AUC row."""
    return (f"{name} ({parameters:,} parameters): test AUC {auc['mean']:.3f} ± {auc['std']:.3f} "
            f"(95 % CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f}, {int(auc['n'])} folds).")


def delong_line(row: pd.Series) -> str:
    """One sentence about the DeLong and McNemar tests of a `test_set_comparison` row."""
    return (f"DeLong on the {int(row['n_test'])} test images (fold ensembles): AUC {row['a']} "
            f"{row['delong_auc1']:.3f} vs {row['b']} {row['delong_auc2']:.3f}, p = {row['delong_p']:.3g}; "
            f"McNemar p = {row['mcnemar_p']:.3g}.")


def conclusions(summary: pd.DataFrame, parameters: dict[str, int], paired: pd.DataFrame,
                test_set: pd.DataFrame) -> list[str]:
    """The computed conclusion lines: each model's test AUC (models in the order of `parameters`), the paired AUC
    comparisons, the DeLong tests (where defined) and whether each model is above chance."""
    auc = summary[summary["metric"] == "auc"].set_index("model")
    lines = [auc_line(name, count, auc.loc[name]) for name, count in parameters.items()]
    lines += ["Paired over folds: " + compare.describe_comparison(row)
              for _, row in paired[paired["metric"] == "test_auc"].iterrows()]
    # a one-class test set has no DeLong columns (or NaN): no sentence for it
    lines += [delong_line(row) for _, row in test_set.iterrows() if "delong_p" in row and pd.notna(row.get("delong_p"))]
    chance = auc["ci_low"] > 0.5
    lines.append("Above chance (CI lower bound > 0.5): "
                 + ", ".join(f"{m} {'yes' if chance[m] else 'no'}" for m in parameters) + ".")
    return lines


def save_conclusions(profile: str, conclusions: list[str], table: pd.DataFrame, cv: pd.DataFrame) -> None:
    """Write `phase1_conclusions.json` (with the run keys) and the notebook's headline for the index page."""
    figures = figures_dir(profile)
    write_json(tables_dir(profile) / "phase1_conclusions.json",
               {"conclusions": conclusions, "run_keys": cv["run_key"].tolist()})
    save_headline(profile, NOTEBOOK, table.reset_index(names="model"), title=TITLE, conclusions=conclusions,
                  figures=[figures / name for name in HEADLINE_FIGURES])
