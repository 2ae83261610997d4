"""Notebook 11: which artefact representation generalises? One trunk, interchangeable front-ends.

Every arm is `front-end -> NPR's ResNet-50 trunk cut after layer2 -> Linear` (`lib.models.artefacts`), trained on
the same split table, folds, native-pixel input and training configuration as notebook 08's H3: a split that holds
some fake sources out of training. Each arm is then scored on two views of that split's test hold-out sharing its
real images: `seen` (fakes of the training sources: in distribution) and `unseen` (fakes of the held-out sources).

Claims, by the one comparison rule (`compare_family`: paired group bootstrap, one Holm family per view):
- each front-end against the `rgb` control (the trunk on pixels): "front-end F generalises better than the control"
  is the `unseen` row, the `seen` row is context;
- each front-end against `npr`;
- each front-end trained with SAFE's augmentation policy against the same front-end without it.
The seen - unseen gap of each arm is descriptive (`npr.seen_unseen_gap`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from lib.data.augment import safe_policy
from lib.evaluation.compare import N_BOOT, describe_family_row, interval_text, metric_intervals
from lib.models.artefacts import ARTEFACT_MODELS, FRONT_ENDS, front_end_map
from lib.paths import RUNS_DIR
from lib.studies.npr import Arm, h3_views, interval_points, view_family

# front-end -> registered model (the trunk and head are the same in all of them; npr keeps its own class)
MODELS = {"npr": "npr", **{front_end: model for model, front_end in ARTEFACT_MODELS.items()}}
CONTROL = "rgb"
NPR = "npr"
SAFE_AUG = "+safe_aug"  # label suffix of an arm trained with SAFE's augmentation policy
VIEWS = ("unseen", "seen")


def front_end_arms(front_ends: Sequence[str], safe_augmented: Sequence[str] = (), crop: int = 0,
                   mask_patch: int = 4) -> list[Arm]:
    """One arm per front-end (the shared training policy: native crops and flips), then one per front-end in
    `safe_augmented` trained with SAFE's policy (`lib.data.augment.safe_policy` on the same native crops)."""
    unknown = sorted(set(front_ends) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown front-end(s) {unknown}; choose among {list(MODELS)}")
    if CONTROL not in front_ends:
        raise ValueError(f"the `{CONTROL}` control must be among the front-ends: every claim is measured against it")
    missing = sorted(set(safe_augmented) - set(front_ends))
    if missing:
        raise ValueError(f"safe_augmented {missing} must also be run without the policy (its comparison)")
    arms = [Arm(fe, MODELS[fe]) for fe in dict.fromkeys(front_ends)]
    policy = safe_policy(crop, mask_patch=mask_patch)
    return arms + [Arm(fe + SAFE_AUG, MODELS[fe], augment=policy) for fe in dict.fromkeys(safe_augmented)]


def claim_pairs(arms: Sequence[Arm]) -> list[tuple[str, str]]:
    """(a, b) meaning "a beats b": every arm against the rgb control, every non-NPR front-end against npr, and every
    SAFE-augmented arm against its front-end without the policy."""
    labels = [a.condition for a in arms]
    plain = [c for c in labels if not c.endswith(SAFE_AUG)]
    pairs = [(c, CONTROL) for c in labels if c != CONTROL]
    pairs += [(c, NPR) for c in labels if NPR in plain and c not in (NPR, CONTROL)]
    pairs += [(c, c[: -len(SAFE_AUG)]) for c in labels if c.endswith(SAFE_AUG)]
    return list(dict.fromkeys(pairs))


def arm_table(arms: Sequence[Arm]) -> pd.DataFrame:
    """One row per arm: its label, registered model, front-end and training policy."""
    return pd.DataFrame([{"condition": a.condition, "model": a.model, "front_end": a.condition.split("+")[0],
                          "training policy": "SAFE (crop, flip, rotation, colour jitter, patch mask)" if a.augment
                          else "shared (native crop, flip)"} for a in arms])


def evaluate(predictions: pd.DataFrame, arms: Sequence[Arm], held: Sequence[str], seen: Sequence[str],
             n_boot: int = N_BOOT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(AUC and AP of every arm on each view with group-bootstrap intervals, the family of every claim per view)."""
    views = h3_views(predictions, held, seen)
    intervals = pd.concat([metric_intervals(frame, "condition", sets=("test",), metrics=("auc", "ap"),
                                            n_boot=n_boot).assign(set=name) for name, frame in views.items()],
                          ignore_index=True)
    return intervals, view_family(views, claim_pairs(arms), n_boot=n_boot)


def verdicts(family: pd.DataFrame, view: str = "unseen", against: str = CONTROL) -> pd.DataFrame:
    """The claim rows "F beats `against`" on `view` (AUC): the answer per front-end, with its interval."""
    if not len(family):
        return pd.DataFrame(columns=["condition", "diff", "ci_low", "ci_high", "verdict"])
    rows = family[(family["b"] == against) & (family["set"] == view) & (family["metric"] == "auc")]
    return rows.rename(columns={"a": "condition"})[["condition", "estimate_a", "estimate_b", "diff", "ci_low",
                                                     "ci_high", "p_holm", "verdict"]].reset_index(drop=True)


def cost(cv: pd.DataFrame, image_size: int, batch_size: int = 32, repeats: int = 3, seed: int = 0,
         runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """Per arm: parameters, training seconds per epoch (mean over folds) and inference images/s measured now on the
    first fold model at `image_size`."""
    from lib.studies.phase3 import inference_speed
    from lib.training.runstore import load_model

    rows = []
    for condition, runs in cv.groupby("condition", sort=False):
        speed = inference_speed(load_model(Path(runs_dir) / runs["run_key"].iloc[0]), image_size, batch_size,
                                repeats, seed=seed)
        rows.append({"condition": condition, "parameters": int(runs["n_parameters"].iloc[0]),
                     "epoch_seconds": float((runs["seconds"] / runs["epochs"]).mean()),
                     "images_per_s": float(speed["images_per_s"])})
    return pd.DataFrame(rows)


def headline(intervals: pd.DataFrame, family: pd.DataFrame, gap: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """The index page's table, one row per arm: seen and unseen AUC (interval, groups), the unseen difference to
    the control with its verdict, the gap, parameters and images/s."""
    auc = intervals[intervals["metric"] == "auc"]
    table = auc.assign(text=auc.apply(interval_text, axis=1)).pivot(index="condition", columns="set", values="text")
    table = table.reindex(columns=[v for v in VIEWS if v in set(auc["set"])]).add_suffix(" AUC")
    claims = verdicts(family).set_index("condition")
    table["unseen: vs rgb"] = claims.apply(
        lambda r: f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] {r['verdict']}", axis=1)
    table["gap (seen - unseen)"] = gap.set_index("condition")["gap"].map("{:+.3f}".format)
    table = table.join(costs.set_index("condition")[["parameters", "images_per_s"]].round(1))
    order = list(dict.fromkeys(auc["condition"]))
    return table.reindex(order).reset_index(names="condition").fillna("")


# ----------------------------------------------------------------------------- figures

def artefact_map_figure(examples: pd.DataFrame, images: np.ndarray, front_ends: Sequence[str],
                        path: str | Path | None = None):
    """What each model sees: one row per example image (its native window, then each front-end's map, absolute
    value averaged over colour channels, each map scaled to its own range)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    front_ends = [fe for fe in front_ends if fe in FRONT_ENDS and fe != CONTROL]
    fig, axes = plt.subplots(len(examples), 1 + len(front_ends), figsize=(2.2 * (1 + len(front_ends)),
                                                                           2.3 * len(examples)), squeeze=False)
    for row, (_, ex) in enumerate(examples.iterrows()):
        img = images[int(ex["index"])]
        x = torch.tensor(img, dtype=torch.float32).div(255).unsqueeze(0)  # the cache is a read-only memmap
        axes[row, 0].imshow(img.transpose(1, 2, 0))
        axes[row, 0].set_title(f"{ex['source']} ({'fake' if ex['label'] else 'real'})", fontsize=8)
        for col, fe in enumerate(front_ends, 1):
            amap = front_end_map(fe, x)[0].abs().mean(0).numpy()
            axes[row, col].imshow(amap, cmap="magma")
            axes[row, col].set_title(fe, fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return save(fig, path)


def pick_examples(manifest: pd.DataFrame, splits: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One real and one fake test image (rows of the manifest with their position as `index`)."""
    test = manifest.assign(index=np.arange(len(manifest)), split=splits["split"].to_numpy())
    test = test[test["split"] == "test"]
    picks = [test[test["label"] == label].sample(1, random_state=seed) for label in (0, 1) if (test["label"] == label).any()]
    return pd.concat(picks, ignore_index=True)


def comparison_figure(intervals: pd.DataFrame, family: pd.DataFrame, costs: pd.DataFrame,
                      path: str | Path | None = None):
    """Left: AUC per arm on the seen and unseen views (95 % group-bootstrap intervals). Middle: each arm's unseen AUC
    minus the control's (Holm-stepped interval). Right: parameters against inference images/s."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), gridspec_kw={"width_ratios": [1.3, 1.1, 0.8]})
    auc = intervals[intervals["metric"] == "auc"]
    interval_points(axes[0], auc, "condition", "set")
    axes[0].set_ylabel("AUC (fold ensemble)")
    axes[0].set_title("AUC on seen and unseen generators")
    axes[0].legend(title="view", fontsize=8)
    axes[0].tick_params(axis="x", labelrotation=30)
    claims = verdicts(family).assign(set="unseen")
    if len(claims):
        interval_points(axes[1], claims, "condition", "set", value="diff")
    axes[1].axhline(0, color="grey", lw=0.8, ls="--")
    axes[1].set_ylabel("unseen AUC - rgb control's")
    axes[1].set_title("against the control, Holm-stepped intervals")
    axes[1].tick_params(axis="x", labelrotation=30)
    axes[2].scatter(costs["parameters"] / 1e6, costs["images_per_s"])
    for _, r in costs.iterrows():
        axes[2].annotate(r["condition"], (r["parameters"] / 1e6, r["images_per_s"]), fontsize=7)
    axes[2].set_xlabel("parameters (millions)")
    axes[2].set_ylabel("inference images/s")
    axes[2].set_title("cost")
    fig.tight_layout()
    return save(fig, path)


# ----------------------------------------------------------------------------- conclusions

def conclusions(family: pd.DataFrame, intervals: pd.DataFrame, gap: pd.DataFrame, costs: pd.DataFrame,
                held: Sequence[str], input_line: str) -> list[str]:
    """Computed sentences: the setting, every claim's verdict on the unseen view (the question) and the seen view,
    the best unseen AUC, each arm's gap, and the cheapest arm."""
    lines = [input_line, f"Unseen generators (held out of training): {', '.join(held)}."]
    for view in VIEWS:
        rows = family[(family["set"] == view) & (family["metric"] == "auc")] if len(family) else family
        for _, row in rows.iterrows():
            lines.append(f"{view}: {describe_family_row(row)}.")
    unseen = intervals[(intervals["set"] == "unseen") & (intervals["metric"] == "auc")]
    if len(unseen):
        best = unseen.loc[unseen["estimate"].idxmax()]
        lines.append(f"Highest unseen AUC: {best['condition']} ({interval_text(best)}); the verdicts above say "
                     "whether its lead over the control is more than resampling noise.")
    for _, row in gap.iterrows():
        lines.append(f"{row['condition']}: seen AUC {row['seen_auc']:.3f}, unseen {row['unseen_auc']:.3f}, gap "
                     f"{row['gap']:+.3f}" + ("" if pd.isna(row["ci_low"]) else
                                             f" [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]") + ".")
    if len(costs):
        fastest = costs.loc[costs["images_per_s"].idxmax()]
        low, high = int(costs["parameters"].min()), int(costs["parameters"].max())
        lines.append(f"Every arm has {low:,}{'' if low == high else f'-{high:,}'} parameters (the front-ends have "
                     f"none); fastest at inference: {fastest['condition']} ({fastest['images_per_s']:.0f} images/s).")
    return lines


def record(settings: dict[str, Any], intervals: pd.DataFrame, family: pd.DataFrame, gap: pd.DataFrame,
           costs: pd.DataFrame, lines: Sequence[str], cv: pd.DataFrame) -> dict[str, Any]:
    """What `tables/artefacts_study.json` keeps: settings, every interval, claim, gap, cost and the run keys."""
    return {"settings": settings, "intervals": intervals.to_dict("records"), "family": family.to_dict("records"),
            "verdicts": verdicts(family).to_dict("records"), "gap": gap.to_dict("records"),
            "cost": costs.to_dict("records"), "conclusions": list(lines), "run_keys": cv["run_key"].tolist()}
