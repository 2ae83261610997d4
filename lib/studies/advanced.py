"""Notebook 09: advanced training and inference techniques, each measured against the baseline.

Training techniques are arms: the baseline model and training configuration with one change (a loss, a batch
augmentation, an attention block, another model such as `srm_cnn`), trained on the same split table, folds, recipe and
seeds. Inference techniques re-score saved runs without retraining: test-time augmentation, MC dropout, ensembles of
the arms (soft, hard, and weights fitted on validation predictions) and temperature scaling (fitted on validation).

Every technique becomes a `condition` of one prediction table, so one rule compares them all (`compare_family`: the
paired group bootstrap, Holm within each view): the claim "technique beats the baseline" on
- `test`: the held-out photographs and the fakes of the generators seen in training,
- `unseen`: the same real photographs and the fakes of a generator held out of training (`holdout_sources`).
Decision thresholds (accuracy) are chosen on validation predictions; nothing is chosen on the test hold-out.
Temperature scaling leaves AUC and the validation-threshold accuracy unchanged (a monotone map), so its question is
calibration: ECE and Brier before and after on the test hold-out, the Brier difference with a group-bootstrap interval.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lib.data.augment import AugmentPolicy
from lib.evaluation import stats
from lib.evaluation.calibration import temperature_scale
from lib.evaluation.compare import (N_BOOT, compare_family, describe_family_row, fold_ensemble, metric_intervals,
                                    validation_thresholds)
from lib.evaluation.ensembles import fit_ensemble_weights, hard_vote, prediction_matrix, soft_vote
from lib.evaluation.metrics import binary_metrics, calibration_table, expected_calibration_error, threshold_sweep
from lib.paths import RUNS_DIR
from lib.studies.npr import as_test_view, interval_points, present_pairs

BASELINE = "baseline"
TTA, MC = "baseline+tta", "baseline+mc_dropout"
ENSEMBLES = ("ensemble soft", "ensemble hard", "ensemble weighted")
VIEWS = ("test", "unseen")
INFERENCE = ("tta", "mc_dropout", "ensembles", "temperature")
_ARM_KEYS = ("model", "model_kwargs", "augment")  # what a technique may set besides TrainConfig fields


# ----------------------------------------------------------------------------- training arms
def training_arms(baseline_model: str, config: Any, techniques: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The baseline, then one arm per technique: `{"condition", "model", "model_kwargs", "config"}`.

    A technique is a dict of TrainConfig fields to change (e.g. `{loss: focal, focal_gamma: 2}`), plus optionally
    `model` (another registered model), `model_kwargs` (e.g. `{attention: se}`) and `augment` (AugmentPolicy fields)."""
    arms = [{"condition": BASELINE, "model": baseline_model, "model_kwargs": {}, "config": config}]
    for name, change in techniques.items():
        if name == BASELINE or name in {a["condition"] for a in arms}:
            raise ValueError(f"technique name {name!r} is taken")
        change = dict(change or {})
        model, kwargs = change.pop("model", baseline_model), dict(change.pop("model_kwargs", {}) or {})
        if "augment" in change:
            change["augment"] = AugmentPolicy(**change["augment"])
        try:
            arm_config = replace(config, **change)
        except TypeError as err:
            raise ValueError(f"technique {name!r}: {err}; it may set TrainConfig fields and {', '.join(_ARM_KEYS)}") from err
        if arm_config == config and model == baseline_model and not kwargs:
            raise ValueError(f"technique {name!r} changes nothing: it would be the baseline")
        arms.append({"condition": name, "model": model, "model_kwargs": kwargs, "config": arm_config})
    return arms


def arm_table(arms: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per arm: what it changes against the baseline."""
    base = arms[0]["config"].to_dict()
    rows = []
    for arm in arms:
        changed = {k: v for k, v in arm["config"].to_dict().items() if base.get(k) != v}
        what = [f"{k}={v}" for k, v in changed.items()]
        what += [f"model={arm['model']}"] if arm["model"] != arms[0]["model"] else []
        what += [f"{k}={v}" for k, v in arm["model_kwargs"].items()]
        rows.append({"condition": arm["condition"], "model": arm["model"], "changes": ", ".join(what) or "(baseline)"})
    return pd.DataFrame(rows)


def run_arms(study: Any, recipe: Any, arms: Sequence[dict[str, Any]], folds: Sequence[int] | None = None,
             runs_dir: str | Path = RUNS_DIR, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or load) every fold of every arm: (fold table, predictions), both with `condition`."""
    from lib.training.runstore import CVJob, collect_predictions, run_cv_many

    jobs = [CVJob(recipe, a["model"], a["config"], a["model_kwargs"] or None) for a in arms]
    tables = run_cv_many(study.dataset, study.splits, jobs, folds=folds, runs_dir=runs_dir, progress=progress)
    cv = pd.concat([t.assign(condition=a["condition"]) for a, t in zip(arms, tables)], ignore_index=True)
    predictions = collect_predictions(cv, runs_dir=runs_dir).join(cv.set_index("run_key")[["condition"]], on="run_key")
    return cv, predictions


# ----------------------------------------------------------------------------- inference techniques
def check_inference(names: Sequence[str]) -> list[str]:
    """The inference techniques asked for, checked against INFERENCE (a typo raises instead of silently skipping)."""
    unknown = sorted(set(names) - set(INFERENCE))
    if unknown:
        raise ValueError(f"unknown inference technique(s) {unknown}; choose among {list(INFERENCE)}")
    return list(dict.fromkeys(names))


def rescored(cv: pd.DataFrame, images: np.ndarray, crop: int = 0, mc_passes: int = 0, seed: int = 0,
             runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """The baseline runs re-scored: TTA (identity + horizontal flip, and the 5 native crops when `crop`) and, with
    `mc_passes`, MC dropout; one row per saved prediction with `tta_probability`, `mc_probability`, `mc_std`."""
    from lib.training.inference import rescore_run
    from lib.training.runstore import load_run

    from lib.training.inference import dropout_modules

    frames = []
    for _, row in cv[cv["condition"] == BASELINE].iterrows():
        run = load_run(Path(runs_dir) / row["run_key"])
        if mc_passes and not dropout_modules(run.get_model()):
            print(f"MC dropout skipped: {run.spec.model} has no dropout layer")
            mc_passes = 0
        frames.append(rescore_run(run, images, crop=crop or None, mc_passes=mc_passes, seed=seed)
                      .assign(model=run.spec.model, run_key=row["run_key"], condition=BASELINE))
    return pd.concat(frames, ignore_index=True)


def inference_conditions(rescore: pd.DataFrame, tta: bool = True) -> pd.DataFrame:
    """TTA (when `tta`) and MC dropout (when re-scored with passes) as conditions of their own, their probability in
    `probability`."""
    out = [rescore.assign(condition=TTA, probability=rescore["tta_probability"])] if tta else []
    if "mc_probability" in rescore.columns:
        out.append(rescore.assign(condition=MC, probability=rescore["mc_probability"]))
    keep = [c for c in rescore.columns if c not in ("tta_probability", "mc_probability", "mc_std")]
    return pd.concat([frame[keep] for frame in out], ignore_index=True)


def ensemble_conditions(predictions: pd.DataFrame, members: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Soft, hard and validation-weighted ensembles of the `members` conditions, fold by fold (each fold's weights fitted
    on that fold's validation predictions only): (their predictions, the weights of each fold)."""
    frames, weights = [], []
    for fold, part in predictions[predictions["condition"].isin(members)].groupby("fold"):
        val_matrix, val_labels = prediction_matrix(part, "val", by="condition")
        if len(np.unique(val_labels)) < 2:  # weights and thresholds need both classes
            print(f"fold {fold}: no ensemble (its validation part has one class only)")
            continue
        w = fit_ensemble_weights(val_matrix[list(members)].to_numpy(), val_labels)
        weights.append({"fold": int(fold), **dict(zip(members, w))})
        thresholds = validation_thresholds(part, "condition")
        for split in sorted(set(part["split"])):
            matrix, _ = prediction_matrix(part, split, by="condition")
            matrix = matrix[list(members)]
            meta = (part[(part["split"] == split) & (part["condition"] == members[0])]
                    .drop_duplicates("row").set_index("row").loc[matrix.index])
            votes = hard_vote(matrix.to_numpy(), thresholds.reindex(list(members)).to_numpy())
            for name, prob in zip(ENSEMBLES, (soft_vote(matrix.to_numpy()), votes, soft_vote(matrix.to_numpy(), w))):
                frames.append(meta.reset_index().assign(condition=name, probability=prob, model=name,
                                                         run_key=f"{name}/fold{fold}"))
    if not frames:
        raise ValueError("no fold has both classes in its validation part: no ensemble can be fitted")
    return pd.concat(frames, ignore_index=True), pd.DataFrame(weights)


def best_single_on_validation(predictions: pd.DataFrame, members: Sequence[str]) -> str:
    """The member with the highest pooled validation AUC (the ensemble's fair opponent, chosen without the test set)."""
    val = predictions[(predictions["split"] == "val") & predictions["condition"].isin(members)]
    auc = {c: binary_metrics(g["label"].to_numpy(), g["probability"].to_numpy())["auc"]
           for c, g in val.groupby("condition")}
    return max(members, key=lambda c: (np.nan_to_num(auc.get(c, np.nan), nan=-1.0), -list(members).index(c)))


# ----------------------------------------------------------------------------- calibration
def temperature_scaled(predictions: pd.DataFrame) -> pd.DataFrame:
    """The baseline's predictions with `temperature` and `calibrated_probability`: one temperature per run, fitted
    on its validation rows (`lib.evaluation.calibration.temperature_scale`; the raw `probability` stays as written by
    the run store). A run whose validation part has one class gets none, and says so."""
    baseline = predictions[predictions["condition"] == BASELINE]
    classes = baseline[baseline["split"] == "val"].groupby("run_key")["label"].nunique()
    one_class = [key for key in dict.fromkeys(baseline["run_key"]) if classes.get(key, 0) < 2]
    for key in one_class:
        print(f"run {key}: no temperature (its validation part has one class only)")
    kept = baseline[~baseline["run_key"].isin(one_class)]
    if kept.empty:
        raise ValueError("no baseline run has both classes in its validation part: no temperature can be fitted")
    return temperature_scale(kept).reset_index(drop=True)


def calibration_summary(scaled: pd.DataFrame, held: Sequence[str], n_boot: int = N_BOOT, n_bins: int = 15,
                        seed: int = 0) -> pd.DataFrame:
    """Per view: ECE and Brier of the fold-ensembled test predictions before and after temperature scaling, and the
    Brier difference (after - before) with its 95 % group-bootstrap interval."""
    rows = []
    for view, frame in _views(scaled, held).items():
        ens = fold_ensemble(frame, "condition", "test", values=("probability", "calibrated_probability")).rename(
            columns={"probability": "before", "calibrated_probability": "after"})
        if ens["label"].nunique() < 2:
            continue
        y = ens["label"].to_numpy()
        groups, group_ids = np.unique(ens["group"].astype(str), return_inverse=True)
        has = ens.assign(g=group_ids).groupby("g")["label"]
        counts = stats.cluster_bootstrap_counts(stats.group_strata(has.min().eq(0).to_numpy(), has.max().eq(1).to_numpy()),
                                                n_boot, seed)
        se_before, se_after = (ens["before"] - y) ** 2, (ens["after"] - y) ** 2
        diffs = stats.weighted_mean(group_ids, se_after - se_before, counts)
        low, high = stats.percentile_interval(diffs)
        rows.append({"set": view, "temperature": float(scaled["temperature"].mean()),
                     "ece_before": expected_calibration_error(y, ens["before"], n_bins),
                     "ece_after": expected_calibration_error(y, ens["after"], n_bins),
                     "brier_before": float(se_before.mean()), "brier_after": float(se_after.mean()),
                     "brier_diff": float((se_after - se_before).mean()), "ci_low": low, "ci_high": high,
                     "verdict": stats.verdict(low, high, direction="less"),
                     "real_groups": int(ens.loc[ens["label"] == 0, "group"].nunique()),
                     "fake_groups": int(ens.loc[ens["label"] == 1, "group"].nunique())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- comparison
def _views(predictions: pd.DataFrame, held: Sequence[str]) -> dict[str, pd.DataFrame]:
    """`test`: test reals + test fakes (seen generators); `unseen`: the same reals + the held-out generators' fakes."""
    views = {"test": as_test_view(predictions, ("test",), ("test",))}
    if held:
        views["unseen"] = as_test_view(predictions, ("test",), ("holdout",), held)
    return views


def evaluate(predictions: pd.DataFrame, held: Sequence[str], pairs: Sequence[tuple[str, str]],
             n_boot: int = N_BOOT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(AUC/AP/accuracy of every condition on each view with group-bootstrap intervals, every claim "a beats b" on AUC
    and on accuracy: one Holm family per view and metric). Accuracy uses each condition's validation-chosen threshold."""
    thresholds = validation_thresholds(predictions, "condition")
    intervals, families = [], []
    for name, frame in _views(predictions, held).items():
        intervals.append(metric_intervals(frame, "condition", sets=("test",), metrics=("auc", "ap", "accuracy"),
                                          thresholds=thresholds, n_boot=n_boot).assign(set=name))
        present = present_pairs(frame, pairs, "condition")
        for metric in ("auc", "accuracy") if present else ():  # one Holm family per (view, metric)
            families.append(compare_family(frame, "condition", present, sets=("test",), metrics=(metric,),
                                           thresholds=thresholds, n_boot=n_boot).assign(set=name))
    return (pd.concat(intervals, ignore_index=True),
            pd.concat(families, ignore_index=True) if families else pd.DataFrame())


def claim_pairs(conditions: Sequence[str], best_single: str) -> list[tuple[str, str]]:
    """Every technique against the baseline; each ensemble also against the best single member (chosen on
    validation) when that is not the baseline."""
    pairs = [(c, BASELINE) for c in conditions if c != BASELINE]
    if best_single != BASELINE:
        pairs += [(e, best_single) for e in ENSEMBLES if e in conditions]
    return pairs


def per_source(predictions: pd.DataFrame, held: Sequence[str], n_boot: int = N_BOOT) -> pd.DataFrame:
    """AUC of every condition per fake source (each against the test hold-out's real photographs), with intervals;
    `unseen` marks the generators held out of training."""
    frames = []
    for source in sorted(predictions.loc[predictions["label"] == 1, "source"].astype(str).unique()):
        split = "holdout" if source in held else "test"
        frame = as_test_view(predictions, ("test",), (split,), [source])
        if frame["label"].nunique() == 2:
            frames.append(metric_intervals(frame, "condition", sets=("test",), n_boot=n_boot)
                          .assign(source=source, unseen=source in held))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def uncertainty_table(rescore: pd.DataFrame, thresholds: pd.Series) -> pd.DataFrame:
    """Does MC dropout's spread rank the errors? Per test-hold-out view of the baseline: AUROC of the spread for
    "this image is misclassified" at the validation threshold (NaN with a reason when no error or only errors)."""
    from lib.evaluation.calibration import uncertainty_error_auroc

    if "mc_std" not in rescore.columns:
        return pd.DataFrame()
    ens = _mc_ensemble(rescore)
    threshold = float(thresholds.get(MC, 0.5))
    rows = []
    for split, part in ens.groupby("split"):
        out = uncertainty_error_auroc(part["label"].to_numpy(), part["mean"].to_numpy(), part["spread"].to_numpy(),
                                      threshold)
        rows.append({"split": split, "threshold": threshold, **out})
    return pd.DataFrame(rows)


def _mc_ensemble(rescore: pd.DataFrame) -> pd.DataFrame:
    """MC dropout's mean (`mean`) and spread (`spread`) per test and holdout image, averaged over the fold models."""
    frames = [fold_ensemble(rescore, "condition", split, values=("mc_probability", "mc_std")).assign(split=split)
              for split in ("test", "holdout")]
    return pd.concat(frames, ignore_index=True).rename(columns={"mc_probability": "mean", "mc_std": "spread"})


def ece_table(predictions: pd.DataFrame, held: Sequence[str], n_bins: int = 15) -> pd.DataFrame:
    """ECE of every condition's fold ensemble on each view (a point estimate: binned, it has no group interval)."""
    rows = []
    for view, frame in _views(predictions, held).items():
        for condition, ens in fold_ensemble(frame, "condition", "test").groupby("condition", sort=False):
            rows.append({"condition": condition, "set": view,
                         "ece": expected_calibration_error(ens["label"].to_numpy(), ens["probability"].to_numpy(),
                                                           n_bins)})
    return pd.DataFrame(rows)


def headline(intervals: pd.DataFrame, family: pd.DataFrame, calibration: pd.DataFrame,
             ece: pd.DataFrame) -> pd.DataFrame:
    """The index page's table, one row per condition: test AUC (interval), Δ AUC and Δ accuracy against the baseline on
    each view (Holm interval, verdict), Δ ECE on the test hold-out; then temperature scaling's ECE and Brier change."""
    auc = intervals[(intervals["metric"] == "auc") & (intervals["set"] == "test")].set_index("condition")
    test_ece = ece[ece["set"] == "test"].set_index("condition")["ece"] if len(ece) else pd.Series(dtype=float)
    rows = []
    for condition in auc.index:
        r = auc.loc[condition]
        row = {"condition": condition, "test AUC": f"{r['estimate']:.3f}" + (
            "" if pd.isna(r["ci_low"]) else f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")}
        for view in VIEWS:
            for metric, label in (("auc", "Δ AUC"), ("accuracy", "Δ acc")):
                claim = family[(family["a"] == condition) & (family["b"] == BASELINE) & (family["set"] == view)
                               & (family["metric"] == metric)] if len(family) else family
                if len(claim):
                    c = claim.iloc[0]
                    row[f"{view}: {label}"] = (f"{c['diff']:+.3f}" + ("" if pd.isna(c["ci_low"]) else
                                               f" [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]") + f" {c['verdict']}")
        if condition != BASELINE and condition in test_ece.index and BASELINE in test_ece.index:
            row["test: Δ ECE"] = f"{test_ece[condition] - test_ece[BASELINE]:+.3f}"
        rows.append(row)
    if len(calibration):  # a monotone map: AUC and accuracy at the validation threshold do not move
        row = {"condition": "baseline+temperature", "test AUC": "as baseline"}
        for _, c in calibration.iterrows():
            row[f"{c['set']}: Δ ECE"] = f"{c['ece_after'] - c['ece_before']:+.3f}"
        row["Δ Brier (lower: verdict)"] = "; ".join(
            f"{c['set']} {c['brier_diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] {c['verdict']}"
            for _, c in calibration.iterrows())
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def family_table(family: pd.DataFrame) -> pd.DataFrame:
    """The claims for display: view, metric, both estimates, the difference with its Holm interval, the verdict."""
    if not len(family):
        return family
    cols = ["set", "metric", "claim", "estimate_a", "estimate_b", "diff", "ci_low", "ci_high", "p_holm", "verdict",
            "real_groups", "fake_groups"]
    return family[cols].round(3)


# ----------------------------------------------------------------------------- figures
def gains_figure(family: pd.DataFrame, path: str | Path | None = None):
    """Δ AUC of every technique against the baseline on each view (Holm-stepped intervals)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    rows = family[(family["b"] == BASELINE) & (family["metric"] == "auc")] if len(family) else family
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * max(1, rows["a"].nunique() if len(rows) else 1)), 4))
    if len(rows):
        interval_points(ax, rows.rename(columns={"a": "condition"}), "condition", "set", value="diff")
        ax.legend(title="view", fontsize=8)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("AUC - baseline's")
    ax.set_title("each technique against the baseline (Holm-stepped intervals over groups)")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return save(fig, path)


def reliability_figure(scaled: pd.DataFrame, n_bins: int = 10, path: str | Path | None = None):
    """Reliability diagram of the baseline on the test hold-out (fold ensemble) before and after temperature scaling."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    ens = fold_ensemble(as_test_view(scaled, ("test",), ("test",)), "condition", "test",
                        values=("probability", "calibrated_probability")).rename(
        columns={"probability": "before", "calibrated_probability": "after"})
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect")
    for column, label in (("before", "raw"), ("after", f"T = {scaled['temperature'].mean():.2f}")):
        table = calibration_table(ens["label"].to_numpy(), ens[column].to_numpy(), n_bins)
        ax.plot(table["prob_pred"], table["prob_true"], marker="o", label=label)
    ax.set_xlabel("mean predicted probability of fake")
    ax.set_ylabel("observed fraction fake")
    ax.set_title("reliability on the test hold-out")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def threshold_figure(predictions: pd.DataFrame, condition: str = BASELINE, path: str | Path | None = None):
    """Accuracy, precision, recall and F1 of `condition` on the test hold-out against the threshold; the threshold
    chosen on validation marked."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    part = predictions[predictions["condition"] == condition]
    threshold = float(validation_thresholds(part, "condition").get(condition, 0.5))
    test = fold_ensemble(as_test_view(part, ("test",), ("test",)), "condition", "test")
    sweep = threshold_sweep(test["label"].to_numpy(), test["probability"].to_numpy(), np.linspace(0.01, 0.99, 99))
    fig, ax = plt.subplots(figsize=(6, 4))
    for metric in ("accuracy", "precision", "recall", "f1"):
        ax.plot(sweep["threshold"], sweep[metric], label=metric)
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"chosen on validation ({threshold:.2f})")
    ax.set_xlabel("threshold on the probability of fake")
    ax.set_title(f"{condition}: test hold-out metrics against the threshold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def uncertainty_figure(rescore: pd.DataFrame, thresholds: pd.Series, path: str | Path | None = None):
    """MC dropout spread of correctly and wrongly classified test images (fold ensemble)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    ens = _mc_ensemble(rescore)
    wrong = (ens["mean"] >= float(thresholds.get(MC, 0.5))).astype(int) != ens["label"]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    ax.boxplot([ens.loc[~wrong, "spread"], ens.loc[wrong, "spread"]])
    ax.set_xticks([1, 2], [f"correct ({int((~wrong).sum())})", f"wrong ({int(wrong.sum())})"])
    ax.set_ylabel("MC dropout std of the probability")
    ax.set_title("does the spread flag the errors?")
    fig.tight_layout()
    return save(fig, path)


def srm_figure(path: str | Path | None = None):
    """The fixed SRM high-pass filters of `srm_cnn`'s front end."""
    import matplotlib.pyplot as plt

    from lib.models.srm import srm_kernels
    from lib.report.plots import save

    kernels = np.asarray(srm_kernels())
    kernels = kernels.reshape(-1, kernels.shape[-2], kernels.shape[-1])
    fig, axes = plt.subplots(1, len(kernels), figsize=(2.2 * len(kernels), 2.4), squeeze=False)
    for ax, k in zip(axes[0], kernels):
        bound = float(np.abs(k).max()) or 1.0
        ax.imshow(k, cmap="coolwarm", vmin=-bound, vmax=bound)
        for (i, j), v in np.ndenumerate(k):
            ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=6)
        ax.set_axis_off()
    fig.suptitle("srm_cnn: fixed SRM high-pass filters (not trained)")
    fig.tight_layout()
    return save(fig, path)


# ----------------------------------------------------------------------------- conclusions
def conclusions(family: pd.DataFrame, intervals: pd.DataFrame, calibration: pd.DataFrame, uncertainty: pd.DataFrame,
                weights: pd.DataFrame, best_single: str, held: Sequence[str], folds: Sequence[int]) -> list[str]:
    """Computed sentences: the setting, every claim's verdict, calibration, the uncertainty check, ensemble weights."""
    lines = [f"Fold models per condition: {len(folds)} (folds {', '.join(map(str, folds))}); unseen generator(s), "
             f"held out of training: {', '.join(held) or 'none'}."]
    for view in VIEWS:
        rows = family[(family["set"] == view) & (family["metric"] == "auc")] if len(family) else family
        for _, row in rows.iterrows():
            lines.append(f"{view}: {describe_family_row(row)}.")
        helped = rows[rows["verdict"] == "supported"]["a"].tolist() if len(rows) else []
        if len(rows):
            lines.append(f"{view}: techniques whose AUC gain over their comparison survives the Holm family: "
                         f"{', '.join(helped) or 'none'} (of {len(rows)} claims).")
    for _, r in calibration.iterrows():
        lines.append(f"Temperature scaling ({r['set']}): T = {r['temperature']:.2f} fitted on validation; ECE "
                     f"{r['ece_before']:.3f} -> {r['ece_after']:.3f}, Brier {r['brier_before']:.4f} -> "
                     f"{r['brier_after']:.4f} (difference {r['brier_diff']:+.4f} [{r['ci_low']:+.4f}, "
                     f"{r['ci_high']:+.4f}]; {r['real_groups']} real / {r['fake_groups']} fake groups): lower Brier "
                     f"{r['verdict']}.")
    for _, r in uncertainty.iterrows():
        value = "undefined" if pd.isna(r["auroc"]) else f"{r['auroc']:.3f}"
        lines.append(f"MC dropout on {r['split']}: AUROC of the spread for an error = {value} over {r['n']} images "
                     f"with {r['n_errors']} errors{'; ' + r['note'] if r.get('note') else ''} (0.5 = no better than "
                     "chance).")
    if len(weights):
        mean = weights.drop(columns="fold").mean()
        lines.append("Ensemble weights fitted on validation (mean over folds): "
                     + ", ".join(f"{c} {w:.2f}" for c, w in mean.items())
                     + f"; the best single member on validation is {best_single}.")
    return lines


def record(settings: dict[str, Any], intervals: pd.DataFrame, family: pd.DataFrame, calibration: pd.DataFrame,
           uncertainty: pd.DataFrame, weights: pd.DataFrame, lines: Sequence[str], cv: pd.DataFrame) -> dict[str, Any]:
    """What `tables/advanced_study.json` keeps."""
    return {"settings": settings, "intervals": intervals.to_dict("records"), "family": family.to_dict("records"),
            "calibration": calibration.to_dict("records"), "uncertainty": uncertainty.to_dict("records"),
            "ensemble_weights": weights.to_dict("records"), "conclusions": list(lines),
            "run_keys": cv["run_key"].tolist()}
