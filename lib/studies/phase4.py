"""Phase 4 (notebook 06): does more data help (learning curve), and the final evaluation of the selected models.

The notebook reads Phase 3's selection (`load_selection`), trains or loads every (model, fraction) run of the data
scaling study (`scaling_splits`, `run_scaling`, `learning_curves`, `scaling_tests`), evaluates the selected models
against the Phase 1 baselines (`run_final`, `final_summary`, `reference_tests`, calibration and hard examples), and
turns the numbers into its conclusion lines (`scaling_conclusions`, `final_conclusions`, `save_conclusions`).
"""


from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from lib.data.recipes import Recipe
from lib.evaluation.stats import summarize, verdict
from lib.fileio import read_json
from lib.studies.phase3 import Candidate, compare_to_references, recipe_boxes, run_candidates
from lib.training.fit import TrainConfig

FINAL_METRICS = ("auc", "ap", "accuracy", "f1", "ece", "brier")
HARD_KINDS = ("false positive", "false negative")


# ----------------------------------------------------------------------------------------------- selection

@dataclass(frozen=True)
class Selection:
    """The models Phase 4 evaluates: (candidate, recipe, training configuration) each, and where they came from."""

    entries: list[tuple[Candidate, Recipe, TrainConfig]]
    origin: str                     # in words, shown by the notebook and its conclusions
    face_min_confidence: float      # MTCNN threshold of the face boxes a face-crop recipe needs

    @property
    def labels(self) -> list[str]:
        return [c.label for c, _, _ in self.entries]


def load_selection(path: str | Path, baseline_models: Sequence[str], phase1_recipe: Recipe,
                   phase1_config: TrainConfig) -> Selection:
    """Phase 3's `phase3_selection.json`, or the Phase 1 baselines (recipe and configuration) when it does not exist
    (notebook 05 has not run), saying which in `origin`."""
    path = Path(path)
    if path.is_file():
        selection = read_json(path)
        entries = [(Candidate.from_dict(e), Recipe.from_dict(e["recipe"]), TrainConfig.from_dict(e["train"]))
                   for e in selection["entries"]]
        origin = f"Phase 3 selection ({path.name}; rule: {selection['rule']})"
        face_min_confidence = float(selection.get("preprocessing", {}).get("face_min_confidence", 0.9))
    else:
        entries = [(Candidate(m, m), phase1_recipe, phase1_config) for m in baseline_models]
        origin = f"Phase 1 baselines ({path.name} not found: notebook 05 has not run)"
        face_min_confidence = 0.9
    if not entries:
        raise ValueError(f"{path} selects no model")
    return Selection(entries, origin, face_min_confidence)


def scaling_splits(manifest: pd.DataFrame, fractions: Sequence[float],
                   **split_kw: Any) -> tuple[dict[float, pd.DataFrame], dict[float, str]]:
    """One split table per training-data fraction (`make_splits(subsample=f)`; whole groups, stratified by the label
    mix of the groups), and, for fractions that cannot be split (e.g. too few real photographs left for every fold to
    hold both classes), the reason. `split_kw`: n_folds, test_ratio, val_ratio, seed, holdout_sources, cache_dir."""
    from lib.data.splits import SplitError, make_splits

    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    if len(set(fractions)) != len(fractions):
        raise ValueError(f"fractions repeat: {fractions}")
    splits, infeasible = {}, {}
    for f in sorted(fractions):
        try:
            splits[f] = make_splits(manifest, subsample=f, **split_kw)
        except SplitError as err:
            infeasible[f] = str(err)
    if not splits:
        raise ValueError(f"no fraction of {fractions} can be split: {infeasible}")
    return splits, infeasible


def scaling_split_check(splits_by_fraction: dict[float, pd.DataFrame], manifest: pd.DataFrame) -> pd.DataFrame:
    """Per fraction: training images (real/fake, groups), share of the largest fraction's trainval, and checks that
    the test and holdout rows are identical to the largest fraction's, that trainval is a subset of it, and which
    share of the kept rows keeps its fold number (folds are re-drawn per fraction by make_splits)."""
    ref_f = max(splits_by_fraction)
    ref = splits_by_fraction[ref_f]
    ref_trainval = (ref["split"] == "trainval").to_numpy()
    labels, groups = manifest["label"].to_numpy(), manifest["group"].to_numpy()
    rows = []
    for f, s in sorted(splits_by_fraction.items()):
        if len(s) != len(manifest):
            raise ValueError(f"split table of fraction {f} has {len(s)} rows, the manifest {len(manifest)}")
        tv = (s["split"] == "trainval").to_numpy()
        rows.append({
            "fraction": f, "trainval": int(tv.sum()), "real": int((labels[tv] == 0).sum()),
            "fake": int((labels[tv] == 1).sum()), "groups": int(len(set(groups[tv]))),
            "share_of_largest": float(tv.sum() / max(ref_trainval.sum(), 1)),
            "test_identical": bool(((s["split"] == "test").to_numpy() == (ref["split"] == "test").to_numpy()).all()),
            "holdout_identical": bool(((s["split"] == "holdout").to_numpy()
                                       == (ref["split"] == "holdout").to_numpy()).all()),
            "trainval_subset": bool(not (tv & ~ref_trainval).any()),
            "same_fold_share": float((s["fold"].to_numpy()[tv] == ref["fold"].to_numpy()[tv]).mean()) if tv.any()
            else math.nan,
        })
    return pd.DataFrame(rows)


def infeasible_notes(infeasible: dict[float, str]) -> list[str]:
    """One line per training fraction that `scaling_splits` could not split, with the reason."""
    return [f"fraction {f:.0%} cannot be split and is left out: {why}" for f, why in infeasible.items()]


def scaling_condition(label: str, fraction: float) -> str:
    """Name of one (model, fraction) condition of the data-scaling study, e.g. "resnet18 @ 50%"."""
    return f"{label} @ {fraction:.0%}"


def run_scaling(dataset: Any, splits_by_fraction: dict[float, pd.DataFrame],
                entries: Sequence[tuple[Candidate, Recipe, TrainConfig]],
                face_min_confidence: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every model of `entries` on every fraction's split table (stored runs are loaded): (fold table, predictions),
    both with the columns fraction and condition (`scaling_condition`)."""
    frames, predictions = [], []
    for cand, recipe, config in entries:
        boxes = recipe_boxes(dataset.manifest, recipe, face_min_confidence)
        for f, splits in splits_by_fraction.items():
            cv, pred = run_candidates(dataset, splits, recipe, config, [cand], boxes)
            condition = scaling_condition(cand.label, f)
            frames.append(cv.assign(fraction=f, condition=condition))
            predictions.append(pred.assign(fraction=f, condition=condition))
    return pd.concat(frames, ignore_index=True), pd.concat(predictions, ignore_index=True)


def learning_curves(cv: pd.DataFrame, metrics: Sequence[str] = ("auc", "accuracy"), by: str = "model",
                    x: str = "fraction") -> pd.DataFrame:
    """`learning_curve` of each test metric stacked into one table, with a `metric` column (e.g. "auc")."""
    return pd.concat([learning_curve(cv, by, x, f"test_{m}").assign(metric=m) for m in metrics], ignore_index=True)


def learning_curve(cv: pd.DataFrame, by: str = "model", x: str = "fraction", metric: str = "test_auc") -> pd.DataFrame:
    """Mean, std and 95 % t-interval of `metric` over folds per (by, x): the points of a learning curve."""
    for col in (by, x, metric):
        if col not in cv.columns:
            raise ValueError(f"fold table has no column {col!r}")
    rows = [{by: level, x: xv, **summarize(g[metric])} for (level, xv), g in cv.groupby([by, x], sort=True)]
    return pd.DataFrame(rows)


def scaling_delta(cv: pd.DataFrame, by: str = "model", x: str = "fraction", low: float = 0.2, high: float = 1.0,
                  metric: str = "test_auc", confidence: float = 0.95) -> pd.DataFrame:
    """Per level of `by`: mean metric at `high` minus at `low` with a Welch t-interval and p-value.

    The fold models of two fractions are trained on different data (folds are re-drawn per fraction), so the folds
    are NOT paired: Welch's unpaired test is the honest one. verdict: "supported" when the interval lies above 0.
    """
    rows = []
    for level, g in cv.groupby(by, sort=False):
        a = g.loc[np.isclose(g[x], high), metric].dropna().to_numpy()
        b = g.loc[np.isclose(g[x], low), metric].dropna().to_numpy()
        row = {by: level, "low": low, "high": high, "n_low": len(b), "n_high": len(a),
               "mean_low": float(b.mean()) if len(b) else math.nan,
               "mean_high": float(a.mean()) if len(a) else math.nan}
        row["delta"] = row["mean_high"] - row["mean_low"]
        lo = hi = p = math.nan
        if len(a) >= 2 and len(b) >= 2 and (np.ptp(a) > 0 or np.ptp(b) > 0):
            res = sps.ttest_ind(a, b, equal_var=False)
            ci = res.confidence_interval(confidence)
            lo, hi, p = float(ci.low), float(ci.high), float(res.pvalue)
        row.update(delta_ci_low=lo, delta_ci_high=hi, welch_p=p, verdict=verdict(lo, hi, "greater"))
        rows.append(row)
    return pd.DataFrame(rows)


def scaling_tests(cv: pd.DataFrame, predictions: pd.DataFrame, fractions: Iterable[float],
                  metric: str = "test_auc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Largest against smallest of `fractions` per model: (`scaling_delta` table, DeLong/McNemar rows between the
    two fold ensembles on the shared test set). Both are empty when only one fraction could be used."""
    from lib.evaluation.compare import test_set_comparison

    low, high = min(fractions), max(fractions)
    if not low < high:  # a single usable fraction: no learning curve to measure
        return pd.DataFrame(columns=["model", "delta", "verdict"]), pd.DataFrame()
    delta = scaling_delta(cv, "model", "fraction", low, high, metric)
    test_set = pd.DataFrame([test_set_comparison(predictions, "condition", scaling_condition(m, high),
                                                 scaling_condition(m, low)) for m in delta["model"]])
    return delta, test_set


# ----------------------------------------------------------------------------------------------- final evaluation

def phase1_references(selection: Selection, baseline_models: Sequence[str]) -> list[str]:
    """The Phase 1 baselines the selected models are compared with: those not themselves selected."""
    return [m for m in baseline_models if m not in selection.labels]


def run_final(dataset: Any, splits: pd.DataFrame, selection: Selection, references: Sequence[str],
              phase1_recipe: Recipe, phase1_config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The selected models and the Phase 1 `references` on the full training data (stored runs are loaded):
    (fold table with a `role` column, predictions)."""
    frames, predictions = [], []
    for cand, recipe, config in selection.entries:
        boxes = recipe_boxes(dataset.manifest, recipe, selection.face_min_confidence)
        cv, pred = run_candidates(dataset, splits, recipe, config, [cand], boxes)
        frames.append(cv.assign(role="selected"))
        predictions.append(pred)
    if references:
        cv, pred = run_candidates(dataset, splits, phase1_recipe, phase1_config, [Candidate(m, m) for m in references])
        frames.append(cv.assign(role="Phase 1 baseline"))
        predictions.append(pred)
    return pd.concat(frames, ignore_index=True), pd.concat(predictions, ignore_index=True)


def final_summary(cv: pd.DataFrame, metrics: Sequence[str] = FINAL_METRICS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long `cv_summary` of the test metrics per model, its wide `mean ± std [ci]` view with each model's role)."""
    from lib.evaluation.compare import cv_summary, summary_wide

    summary = cv_summary(cv, by="model", part="test", metrics=list(metrics))
    return summary, summary_wide(summary, by="model").join(cv.groupby("model")["role"].first())


def reference_tests(cv: pd.DataFrame, predictions: pd.DataFrame, selected: Sequence[str],
                    references: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each selected model against each Phase 1 reference: (paired fold tests of test AUC and accuracy, Holm over the
    family; DeLong/McNemar of the fold ensembles on the test set). Both empty without references."""
    from lib.evaluation.compare import test_set_comparison

    if not references:
        return pd.DataFrame(), pd.DataFrame()
    paired = compare_to_references(cv, "model", references, selected, metrics=["test_auc", "test_accuracy"])
    test_set = pd.DataFrame([test_set_comparison(predictions, "model", a, b) for a in selected for b in references])
    return paired, test_set


def calibration_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """ECE and Brier score (mean over folds) per model, from the long `final_summary` table."""
    calibration = summary[summary["metric"].isin(["ece", "brier"])]
    return calibration.pivot(index="model", columns="metric", values="mean")


def reliability_tables(predictions: pd.DataFrame, by: str = "model", split: str = "test",
                       n_bins: int = 10) -> pd.DataFrame:
    """Reliability-diagram points per level of `by`: every fold model's predictions on `split` pooled
    (`lib.evaluation.metrics.calibration_table`: bin, mean predicted probability, observed fake fraction, count)."""
    from lib.evaluation.metrics import calibration_table

    part = predictions[predictions["split"] == split]
    if part.empty:
        raise ValueError(f"no predictions on split {split!r}")
    frames = [calibration_table(g["label"], g["probability"], n_bins).assign(**{by: level})
              for level, g in part.groupby(by, sort=False)]
    return pd.concat(frames, ignore_index=True)


def hard_examples(predictions: pd.DataFrame, thresholds: pd.Series | dict, by: str = "model", n: int = 8,
                  split: str = "test") -> pd.DataFrame:
    """Most confident errors of each level's fold ensemble on `split`, at its validation-chosen threshold.

    False positives: real images with the highest fake probability above the threshold; false negatives: fakes with
    the lowest probability below it. Columns: by, kind (false positive / false negative), rank, path, source, label,
    probability, threshold. Fewer than `n` rows when the model makes fewer errors.
    """
    from lib.evaluation.compare import fold_ensemble

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ens = fold_ensemble(predictions, by=by, split=split)
    frames = []
    for level, g in ens.groupby(by, sort=False):
        if level not in thresholds:
            raise KeyError(f"no threshold for {level!r}")
        t = float(thresholds[level])
        fp = g[(g["label"] == 0) & (g["probability"] >= t)].sort_values("probability", ascending=False).head(n)
        fn = g[(g["label"] == 1) & (g["probability"] < t)].sort_values("probability", ascending=True).head(n)
        for kind, rows in (("false positive", fp), ("false negative", fn)):
            frames.append(rows.assign(kind=kind, rank=np.arange(1, len(rows) + 1), threshold=t))
    cols = [by, "kind", "rank", "path", "source", "label", "probability", "threshold"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def plot_learning_curve(curve: pd.DataFrame, by: str = "model", x: str = "fraction", metric: str = "AUC",
                        path: str | Path | None = None):
    """Mean metric against the training fraction, one line per level, shaded 95 % interval."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for level, g in curve.groupby(by, sort=False):
        g = g.sort_values(x)
        line, = ax.plot(g[x], g["mean"], "o-", label=str(level))
        ax.fill_between(g[x], g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="fraction of the training data", ylabel=f"test {metric} (mean, 95 % CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_reliability(tables: pd.DataFrame, by: str = "model", path: str | Path | None = None):
    """Reliability diagram (observed fake fraction vs mean predicted probability), the diagonal is perfect."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    for level, g in tables.groupby(by, sort=False):
        line, = ax.plot(g["prob_pred"], g["prob_true"], "-", label=str(level))
        ax.scatter(g["prob_pred"], g["prob_true"], s=10 + 60 * g["count"] / g["count"].max(), color=line.get_color())
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted P(fake)", ylabel="observed fraction of fakes",
           title="reliability (test, fold models pooled)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_confidence_histograms(predictions: pd.DataFrame, by: str = "model", split: str = "test", bins: int = 20,
                               path: str | Path | None = None):
    """Histogram of P(fake) per true class, one panel per level of `by` (fold models pooled)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    part = predictions[predictions["split"] == split]
    levels = list(dict.fromkeys(part[by]))
    fig, axes = plt.subplots(1, len(levels), figsize=(4 * len(levels), 3.2), squeeze=False, sharey=True)
    edges = np.linspace(0, 1, bins + 1)
    for ax, level in zip(axes[0], levels):
        g = part[part[by] == level]
        for label, name, colour in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
            ax.hist(g.loc[g["label"] == label, "probability"], bins=edges, alpha=0.55, color=colour, label=name)
        ax.set(title=str(level), xlabel="P(fake)")
    axes[0][0].set_ylabel("images")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_gallery(rows: pd.DataFrame, title: str, ncols: int = 8, path: str | Path | None = None):
    """Images of `rows` (columns path, source, probability) with their source and probability as titles."""
    from lib.data.imageio import load_rgb
    from lib.report.plots import image_grid

    images = [load_rgb(p) for p in rows["path"]]
    titles = [f"{s}\np={p:.2f}" for s, p in zip(rows["source"], rows["probability"])]
    return image_grid(images, titles, ncols=max(1, min(ncols, len(images))), size=1.7,
                      suptitle=title if len(images) else f"{title}: none", path=path)


def plot_hard_galleries(hard: pd.DataFrame, thresholds: pd.Series | dict, labels: Sequence[str],
                        figures: str | Path) -> list[Path]:
    """One `plot_gallery` per model of `labels` and kind of error, saved as phase4_hard_<model index>_<kind>.png in
    `figures`; the paths in that order."""
    paths = []
    for i, label in enumerate(labels):
        for kind in HARD_KINDS:
            rows = hard[(hard["model"] == label) & (hard["kind"] == kind)]
            path = Path(figures) / f"phase4_hard_{i}_{kind.replace(' ', '_')}.png"
            plot_gallery(rows, f"{label}: most confident {kind}s (threshold {thresholds[label]:.2f})", path=path)
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------- conclusions

def scaling_conclusions(selection: Selection, infeasible: dict[float, str], split_check: pd.DataFrame,
                        delta: pd.DataFrame) -> list[str]:
    """Conclusion lines of 4A: which models, which fractions were left out, the subsample checks, and per model the
    test AUC at the smallest and largest fraction with the Welch interval of the gain."""
    lines = [f"Models: {', '.join(selection.labels)} from {selection.origin}."]
    lines += [f"Fraction {f:.0%} left out of the learning curve: {why}." for f, why in infeasible.items()]
    lines.append(f"Subsamples: test hold-out identical across fractions: "
                 f"{'yes' if split_check['test_identical'].all() else 'NO'}; "
                 f"training parts nested in the full one: {'yes' if split_check['trainval_subset'].all() else 'NO'}; "
                 f"training images {', '.join(f'{r.fraction:.0%}: {r.trainval}' for r in split_check.itertuples())}.")
    lines += [f"{r['model']}: test AUC {r['mean_low']:.3f} at {r['low']:.0%} -> {r['mean_high']:.3f} at "
              f"{r['high']:.0%}, Δ {r['delta']:+.3f} (Welch 95 % CI {r['delta_ci_low']:+.3f} to "
              f"{r['delta_ci_high']:+.3f}) -> more data helps: {r['verdict']}." for _, r in delta.iterrows()]
    return lines


def final_conclusions(summary: pd.DataFrame, paired: pd.DataFrame, per_source: pd.DataFrame, hard: pd.DataFrame,
                      selected: Sequence[str], n_hard: int) -> list[str]:
    """Conclusion lines of 4B: test AUC, ECE and Brier per model, the paired AUC tests against the references, each
    model's hardest fake source, and how many confident errors of each selected model are shown."""
    from lib.evaluation.compare import describe_comparison

    auc = summary[summary["metric"] == "auc"].set_index("model")
    cal = summary.pivot(index="model", columns="metric", values="mean")
    lines = [f"{name}: test AUC {r['mean']:.3f} (95 % CI {r['ci_low']:.3f}-{r['ci_high']:.3f}), "
             f"ECE {cal.loc[name, 'ece']:.3f}, Brier {cal.loc[name, 'brier']:.3f}." for name, r in auc.iterrows()]
    if len(paired):
        lines += ["Paired over folds: " + describe_comparison(row)
                  for _, row in paired[paired["metric"] == "test_auc"].iterrows()]
    worst = per_source[per_source["label"] == 1].sort_values("accuracy_mean").groupby("model").head(1)
    lines += [f"{r['model']}: hardest fake source {r['source']} (accuracy {r['accuracy_mean']:.3f} at 0.5)."
              for _, r in worst.iterrows()]
    counts = hard.groupby(["model", "kind"]).size()
    lines += [f"{label} errors on the test set at its validation threshold: "
              f"{counts.get((label, 'false positive'), 0)} false positives and "
              f"{counts.get((label, 'false negative'), 0)} false negatives shown (at most {n_hard} each)."
              for label in selected]
    return lines


def save_conclusions(profile: str, conclusions: Sequence[str], selection: Selection, final_table: pd.DataFrame,
                     figures: Sequence[str | Path]) -> None:
    """phase4_conclusions.json (lines, models, origin) and the notebook's headline for the index page."""
    from lib.fileio import write_json
    from lib.paths import tables_dir
    from lib.report import save_headline

    write_json(tables_dir(profile) / "phase4_conclusions.json",
               {"conclusions": list(conclusions), "models": selection.labels, "origin": selection.origin})
    save_headline(profile, "06_phase4_final", final_table.reset_index(names="model"),
                  title="06 · Phase 4: data scaling and final evaluation", conclusions=conclusions, figures=figures)
