"""Phase 4 (notebook 06): does more data help (learning curve), and the final evaluation of the selected models."""


from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from lib.evaluation.stats import summarize, verdict


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
