"""Phase 4 (notebook 06): does more data help (learning curve), and the final report on the selected models.

The notebook reads Phase 3's stamped selection (`load_selection`; chosen on out-of-fold validation predictions),
trains or loads every (model, fraction) run of the data scaling study (`scaling_splits`, `run_scaling`,
`learning_curve`, `scaling_comparisons`), scores the test hold-out once for the selected models and the Phase 1
baselines (`run_final`, `final_table`, `reference_comparisons`, calibration and hard examples), and turns the numbers
into its conclusion lines (`scaling_conclusions`, `final_conclusions`, `save_conclusions`). Every headline number is a
group-bootstrap interval with its group counts (`lib.evaluation.compare.metric_intervals`); every paired claim follows
the one comparison rule (`compare_family`).
"""


from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from lib.data.recipes import Recipe
from lib.evaluation import compare
from lib.fileio import read_stamped_json
from lib.studies import phase1
from lib.studies.phase3 import Candidate, recipe_boxes, run_candidates, selection_metric
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
    rule: str = ""                  # Phase 3's selection rule ("" for the fallback: nothing was chosen)

    @property
    def labels(self) -> list[str]:
        return [c.label for c, _, _ in self.entries]


def load_selection(path: str | Path, baseline_models: Sequence[str], phase1_recipe: Recipe,
                   phase1_config: TrainConfig, stamp: dict[str, str]) -> Selection:
    """Phase 3's stamped `phase3_selection.json`, or the Phase 1 baselines (recipe and configuration) when it does not
    exist (notebook 05 has not run), saying which in `origin`. A file made from another dataset or split table than
    `stamp` raises `lib.fileio.ArtefactMismatch`; a selection made on a test metric raises ValueError."""
    path = Path(path)
    if path.is_file():
        selection = read_stamped_json(path, stamp)
        selection_metric(selection.get("metric", "oof_auc"))  # raises for a choice made on the test hold-out
        entries = [(Candidate.from_dict(e), Recipe.from_dict(e["recipe"]), TrainConfig.from_dict(e["train"]))
                   for e in selection["entries"]]
        origin = (f"Phase 3 selection ({path.name}; chosen on out-of-fold validation predictions by "
                  f"{selection.get('metric', 'oof_auc')})")
        face_min_confidence = float(selection.get("preprocessing", {}).get("face_min_confidence", 0.9))
        rule = str(selection["rule"])
    else:
        entries = [(Candidate(m, m), phase1_recipe, phase1_config) for m in baseline_models]
        origin = f"Phase 1 baselines ({path.name} not found: notebook 05 has not run)"
        face_min_confidence, rule = 0.9, ""
    if not entries:
        raise ValueError(f"{path} selects no model")
    return Selection(entries, origin, face_min_confidence, rule)


def scaling_splits(manifest: pd.DataFrame, fractions: Sequence[float],
                   **split_kw: Any) -> tuple[dict[float, pd.DataFrame], dict[float, str]]:
    """One split table per training-data fraction (`make_splits(subsample=f)`; whole groups, stratified by the label
    mix of the groups), and, for fractions that cannot be split (e.g. too few real photographs left for every fold to
    hold both classes), the reason. `split_kw`: n_folds, test_ratio, val_ratio, seed, holdout_sources, cache_dir."""
    from lib.data.splits import SplitError, SplitWarning, make_splits

    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    if len(set(fractions)) != len(fractions):
        raise ValueError(f"fractions repeat: {fractions}")
    splits, infeasible = {}, {}
    for f in sorted(fractions):
        try:
            with warnings.catch_warnings(record=True) as caught:  # said as a sentence, not as a raw warning
                warnings.simplefilter("always", SplitWarning)
                splits[f] = make_splits(manifest, subsample=f, **split_kw)
        except SplitError as err:
            infeasible[f] = str(err)
            continue
        for w in caught:
            if issubclass(w.category, SplitWarning):
                print(f"training fraction {f:g}: {w.message}")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
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


def condition_levels(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per scaling condition: condition, model, fraction (from `run_scaling`'s predictions)."""
    return predictions[["condition", "model", "fraction"]].drop_duplicates("condition").reset_index(drop=True)


def learning_curve(predictions: pd.DataFrame, sets: Sequence[str] = phase1.SETS,
                   metrics: Sequence[str] = ("auc",)) -> pd.DataFrame:
    """The points of the learning curves: `metric_intervals` per scaling condition (group-bootstrap interval, group
    counts) on each set, with its model and fraction. The test hold-out is identical for every fraction; the oof set
    of a fraction holds only the groups of its subsample."""
    table = compare.metric_intervals(predictions, "condition", sets=sets, metrics=metrics)
    return table.merge(condition_levels(predictions), on="condition", how="left")


def scaling_pairs(predictions: pd.DataFrame, fractions: Iterable[float]) -> list[tuple[str, str]]:
    """(model @ largest fraction, model @ smallest fraction) per model; empty with a single fraction."""
    fractions = list(fractions)
    low, high = min(fractions), max(fractions)
    if not low < high:  # a single usable fraction: no learning curve to measure
        return []
    models = dict.fromkeys(predictions["model"])
    return [(scaling_condition(m, high), scaling_condition(m, low)) for m in models]


def scaling_comparisons(predictions: pd.DataFrame, fractions: Iterable[float],
                        sets: Sequence[str] = phase1.SETS) -> pd.DataFrame:
    """Largest against smallest fraction per model by the one comparison rule (`compare_family` on the images both
    conditions scored; claim 'more data helps'). Empty when only one fraction could be used. The fold models of two
    fractions are trained on different folds, so there is no fold-level pairing."""
    pairs = scaling_pairs(predictions, fractions)
    if not pairs:
        return pd.DataFrame(columns=compare.FAMILY_COLUMNS)
    return compare.compare_family(predictions, "condition", pairs, sets=sets, metrics=("auc",))


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
    """The descriptive training-noise view: (long `cv_summary` of the fold models' test metrics per model, its wide
    `mean ± std [t-interval]` view with each model's role). ECE and Brier are read from it; headline AUC and accuracy
    come from `final_table` (group bootstrap)."""
    summary = compare.cv_summary(cv, by="model", part="test", metrics=list(metrics))
    return summary, compare.summary_wide(summary, by="model").join(cv.groupby("model")["role"].first())


def final_table(table: pd.DataFrame, summary: pd.DataFrame, cv: pd.DataFrame) -> pd.DataFrame:
    """The final report's table: per model its role, AUC and accuracy with group-bootstrap intervals and group counts
    on oof and on the test hold-out (a `phase1.intervals` table), and ECE and Brier (fold mean on the test hold-out)."""
    wide = phase1.interval_table(table)
    role = cv.groupby("model")["role"].first().reindex(wide.index)
    calibration = calibration_summary(summary).round(3).reindex(columns=["ece", "brier"])
    return wide.join(calibration).join(role).pipe(lambda t: t[["role", *wide.columns, "ece", "brier"]])


def reference_pairs(selected: Sequence[str], references: Sequence[str]) -> list[tuple[str, str]]:
    """(selected model, Phase 1 reference) for every pair."""
    return [(a, b) for a in selected for b in references if a != b]


def reference_comparisons(predictions: pd.DataFrame, selected: Sequence[str], references: Sequence[str],
                          sets: Sequence[str] = phase1.SETS,
                          metrics: Sequence[str] = phase1.HEADLINE_METRICS) -> pd.DataFrame:
    """Each selected model against each Phase 1 reference by the one comparison rule (`compare_family`, one Holm
    family per set). Empty without references."""
    pairs = reference_pairs(selected, references)
    if not pairs:
        return pd.DataFrame(columns=compare.FAMILY_COLUMNS)
    return compare.compare_family(predictions, "model", pairs, sets=sets, metrics=metrics)


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
    """Metric against the training fraction, one panel per evaluation set, one line per level with its shaded
    group-bootstrap interval (a `learning_curve` table of one metric)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    sets = list(dict.fromkeys(curve["set"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], sets):
        for level, g in curve[curve["set"] == name].groupby(by, sort=False):
            g = g.sort_values(x)
            line, = ax.plot(g[x], g["estimate"], "o-", label=str(level))
            ax.fill_between(g[x], g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.2)
        ax.set(xlabel="fraction of the training data", title=phase1.SET_NAMES.get(name, name))
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"{metric} (95 % group-bootstrap CI)")
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
                        curve: pd.DataFrame, family: pd.DataFrame) -> list[str]:
    """Conclusion lines of 4A: which models, which fractions were left out, the subsample checks, per model and
    fraction the AUC with interval and groups, and per model and set the claim 'more data helps' (largest vs smallest
    fraction by the one comparison rule)."""
    rule = f" (rule: {selection.rule})" if selection.rule else ""
    lines = [f"Models: {', '.join(selection.labels)} from {selection.origin}{rule}."]
    lines += [f"Fraction {f:.0%} left out of the learning curve: {why}." for f, why in infeasible.items()]
    lines.append(f"Subsamples: test hold-out identical across fractions: "
                 f"{'yes' if split_check['test_identical'].all() else 'NO'}; "
                 f"training parts nested in the full one: {'yes' if split_check['trainval_subset'].all() else 'NO'}; "
                 f"training images {', '.join(f'{r.fraction:.0%}: {r.trainval}' for r in split_check.itertuples())}.")
    auc = curve[curve["metric"] == "auc"]
    lines += [phase1.headline_line(condition, rows) for condition, rows in auc.groupby("condition", sort=False)]
    lines += ["More data: " + line for line in phase1.family_lines(family)]
    return lines


def final_conclusions(table: pd.DataFrame, summary: pd.DataFrame, family: pd.DataFrame, folds: pd.DataFrame,
                      test_set: pd.DataFrame, image_note: str, per_source: pd.DataFrame, hard: pd.DataFrame,
                      selection: Selection, n_hard: int) -> list[str]:
    """Conclusion lines of 4B: that the models were chosen on validation and the test hold-out is scored here; each
    model's AUC with interval and groups on oof and test, ECE and Brier; the paired AUC claims against the
    references (oof and test); the secondary fold-level tests; DeLong or why it is omitted; each model's hardest fake
    source; and how many confident errors of each selected model are shown."""
    selected = selection.labels
    if selection.rule:
        lines = [f"Final report: {', '.join(selected)} from {selection.origin}; the test hold-out is scored here for "
                 f"them and the Phase 1 references. Their oof numbers are those they were chosen on (optimistic); "
                 f"the test numbers are not."]
    else:
        lines = [f"Final report: {', '.join(selected)} are the {selection.origin}; nothing was chosen, the test "
                 f"hold-out is scored here."]
    cal = summary.pivot(index="model", columns="metric", values="mean")
    for name in dict.fromkeys(table["model"]):
        line = phase1.headline_line(name, table[table["model"] == name]).removesuffix(".")
        if name in cal.index and {"ece", "brier"} <= set(cal.columns):
            line += f"; ECE {cal.loc[name, 'ece']:.3f}, Brier {cal.loc[name, 'brier']:.3f} (test, fold mean)"
        lines.append(line + ".")
    lines += phase1.family_lines(family)
    lines += [phase1.fold_test_line(row) for _, row in folds.iterrows()]
    if len(family) or len(test_set):
        lines += phase1.image_test_lines(test_set, image_note)
    worst = per_source[per_source["label"] == 1].sort_values("accuracy_mean").groupby("model").head(1)
    lines += [f"{r['model']}: hardest fake source {r['source']} (test accuracy {r['accuracy_mean']:.3f} at 0.5, fold "
              f"mean)." for _, r in worst.iterrows()]
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
