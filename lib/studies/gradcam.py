"""The Grad-CAM deep dive (notebook 07): where do the stored models look?

Which runs to explain (`stored_subjects` from the Phase 2/3 fold tables, `architecture_subjects` trained or loaded
here), `cam_grid_size` (is the target layer more than one cell?), `explain_run` / `explain_subjects` (CAMs and energy
shares of stored runs on selected test images), energy shares against the uniform expectation and between classes and
conditions, the CAM figures, and the notebook's computed conclusions (`conclusions`, `save_conclusions`).
"""


from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

from lib.data.recipes import Recipe
from lib.evaluation.stats import holm, summarize, verdict
from lib.training.fit import TrainConfig

SUBJECT_COLUMNS = ["subject", "group", "condition", "model", "run_key"]
SIGNIFICANCE = 0.05  # Holm-adjusted p below this counts as a difference in the conclusions


# ----------------------------------------------------------------------------------------------- which runs

def phase2_subjects(folds: pd.DataFrame, fold: int, conditions: Sequence[str] = ()) -> list[dict[str, str]]:
    """One subject per run of `fold` in Phase 2's fold table, limited to `conditions` (empty: all)."""
    keep = (folds["fold"] == fold) & (folds["condition"].isin(conditions) if len(conditions) else True)
    return [{"subject": f"{r.model} · {r.condition}", "group": "Phase 2", "condition": r.condition,
             "model": r.model, "run_key": r.run_key} for r in folds[keep].itertuples()]


def phase3_subjects(folds: pd.DataFrame, fold: int) -> list[dict[str, str]]:
    """One subject per Phase 3 model run of `fold` in Phase 3's fold table (its Phase 1 baselines left out)."""
    keep = (folds["fold"] == fold) & (folds["group"] != "Phase 1 baseline")
    return [{"subject": f"{r.model} · Phase 3", "group": "Phase 3", "condition": "phase3", "model": r.model,
             "run_key": r.run_key} for r in folds[keep].itertuples()]


def stored_subjects(tables: str | Path, fold: int, stamp: dict[str, str], phase2_conditions: Sequence[str] = (),
                    include_phase3: bool = True) -> tuple[list[dict[str, str]], list[str]]:
    """Subjects from the stamped phase2_folds.csv and (if `include_phase3`) phase3_folds.csv in `tables`, and a note
    for each of those files that does not exist yet. A table made from another dataset or split table than `stamp`
    (`Study.stamp`) raises `lib.fileio.ArtefactMismatch`."""
    from lib.fileio import read_stamped_table

    phase2_path, phase3_path = Path(tables) / "phase2_folds.csv", Path(tables) / "phase3_folds.csv"
    subjects, notes = [], []
    if phase2_path.is_file():
        subjects += phase2_subjects(read_stamped_table(phase2_path, stamp), fold, phase2_conditions)
    else:
        notes.append(f"{phase2_path.name} not found (notebook 04 has not run): no Phase 2 conditions")
    if include_phase3 and phase3_path.is_file():
        subjects += phase3_subjects(read_stamped_table(phase3_path, stamp), fold)
    elif include_phase3:
        notes.append(f"{phase3_path.name} not found (notebook 05 has not run): no Phase 3 models")
    return subjects, notes


def architecture_subjects(dataset: Any, splits: pd.DataFrame, config: TrainConfig, fold: int,
                          models_by_size: Sequence[tuple[int, Sequence[str]]]) -> list[dict[str, str]]:
    """One subject per (input size, model) of `models_by_size`, trained on `fold` only with the baseline recipe at
    that size (a run another notebook stored with the same configuration is loaded). Every size's runs go to the
    executor together."""
    from lib.studies.common import baseline_recipe
    from lib.training.runstore import CVJob, run_cv_many

    pairs = [(size, name) for size, names in models_by_size for name in names]
    tables = run_cv_many(dataset, splits, [CVJob(baseline_recipe(size), name, config) for size, name in pairs],
                         folds=[fold]) if pairs else []
    return [{"subject": f"{name} · {size} px", "group": "architectures", "condition": f"resize_{size}", "model": name,
             "run_key": table["run_key"].iloc[0]} for (size, name), table in zip(pairs, tables)]


def subject_table(*subjects: list[dict[str, str]]) -> pd.DataFrame:
    """The subject lists as one table, each run once (its first subject kept)."""
    rows = [s for group in subjects for s in group]
    return pd.DataFrame(rows, columns=SUBJECT_COLUMNS).drop_duplicates("run_key").reset_index(drop=True)


def cam_grid_size(model: torch.nn.Module, model_name: str, image_size: int) -> tuple[int, int]:
    """Spatial size (h, w) of the Grad-CAM target layer's output for a square input of `image_size` px.

    A 1x1 map carries no spatial information (every CAM is constant), so callers skip such models.
    """
    from lib.models import gradcam_reshape_transform, gradcam_target_layers

    layers = gradcam_target_layers(model_name, model)
    reshape = gradcam_reshape_transform(model_name)
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: seen.append(out)) for layer in layers]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = seen[0]
    if reshape is not None:
        out = reshape(out)
    return int(out.shape[-2]), int(out.shape[-1])


def normalised_inputs(images: np.ndarray, rows: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """float32 (N, 3, S, S) tensor of `images[rows]` (uint8 cache) normalised exactly as in training/evaluation."""
    x = torch.from_numpy(np.ascontiguousarray(images[np.asarray(rows, dtype=np.int64)])).float() / 255.0
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


@dataclass
class RunExplanation:
    """CAMs of one stored run on selected test images."""

    run_key: str
    model: str
    recipe: Recipe
    grid: tuple[int, int]
    examples: pd.DataFrame          # selected prediction rows (row, path, source, label, probability, cell, correct)
    images: np.ndarray              # (N, S, S, 3) uint8 model inputs
    cams: dict[str, np.ndarray]     # method -> (N, S, S) in [0, 1]
    energy: pd.DataFrame            # one row per (method, image): border/centre/face shares + example columns


def explain_run(run_key: str, dataset: Any, n_per_cell: int = 4, seed: int = 42,
                methods: Sequence[str] = ("gradcam", "gradcam++"), border_frac: float = 0.15,
                face_boxes: pd.DataFrame | None = None, threshold: float = 0.5, split: str = "test",
                target: str = "predicted", min_cells: int = 2, progress: bool = False, runs_dir: str | Path | None = None,
                cache_dir: str | Path | None = None) -> RunExplanation | str:
    """Grad-CAM (and Grad-CAM++) of the stored run `run_key` on up to `n_per_cell` images of each cell real/fake x
    correct/wrong of its `split` predictions (decided at `threshold`), with border/centre/face energy shares.

    Inputs come from the run's own recipe (tensor cache) and normalisation (metrics.json). `face_boxes`: the
    `lib.data.faces.face_boxes` table of the manifest (original pixels), mapped into the recipe's pixels for the face
    shares, and needed to rebuild a face-crop recipe's cache. Returns a string (the reason) instead when the CAMs
    would carry (almost) no spatial information (target layer smaller than `min_cells` per side; a 1x1 map never
    carries any) or there is nothing to explain.
    """
    from lib.data.cache import build_cache
    from lib.paths import CACHE_DIR, RUNS_DIR
    from lib.report.explain import (
        cam_energy_table,
        compute_cams,
        map_boxes_to_recipe,
        select_examples,
    )
    from lib.training.runstore import load_model, load_run

    run = load_run(Path(runs_dir or RUNS_DIR) / run_key)
    spec = run.spec
    if spec.dataset != dataset.fingerprint:
        raise ValueError(f"run {run_key} was trained on dataset {spec.dataset}, not {dataset.fingerprint}")
    model = load_model(run.run_dir)
    grid = cam_grid_size(model, spec.model, spec.recipe.size)
    if grid[0] * grid[1] <= 1 or min(grid) < min_cells:
        return (f"{spec.model} at {spec.recipe.size} px: its Grad-CAM map is {grid[0]}x{grid[1]} cells (minimum "
                f"{min_cells} per side; a 1x1 map carries no spatial information): skipped, needs a larger input")
    preds = run.predictions[run.predictions["split"] == split]
    if preds.empty:
        return f"run {run_key} has no {split} predictions"
    examples = select_examples(preds, n_per_cell, seed, threshold=threshold)
    if examples.empty:
        return f"run {run_key}: no {split} images to explain"
    manifest = dataset.manifest
    boxes_all = None if face_boxes is None else face_boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    cache = build_cache(manifest, spec.recipe, boxes=boxes_all if spec.recipe.needs_boxes else None,
                        cache_dir=cache_dir or CACHE_DIR, progress=progress)
    rows = examples["row"].to_numpy(np.int64)
    norm = run.metrics["normalization"]
    x = normalised_inputs(cache, rows, norm["mean"], norm["std"])
    boxes = None
    if boxes_all is not None:
        m = manifest.iloc[rows]
        boxes = map_boxes_to_recipe(boxes_all[rows], m["width"], m["height"], spec.recipe, m["label"])
    cams, tables = {}, []
    for method in methods:
        cams[method] = compute_cams(model, spec.model, x, method=method, target=target, progress=progress)
        table = cam_energy_table(cams[method], examples["label"], examples["correct"], boxes, border_frac)
        ex = examples[["row", "path", "source", "probability", "cell"]].reset_index(drop=True)
        tables.append(pd.concat([ex, table], axis=1).assign(method=method, run_key=run_key, model=spec.model,
                                                              image_size=spec.recipe.size))
    images = np.ascontiguousarray(np.asarray(cache[rows]).transpose(0, 2, 3, 1))
    return RunExplanation(run_key, spec.model, spec.recipe, grid, examples.reset_index(drop=True), images, cams,
                          pd.concat(tables, ignore_index=True))


def explain_subjects(subjects: pd.DataFrame, dataset: Any, n_per_cell: int = 4, seed: int = 42,
                     methods: Sequence[str] = ("gradcam", "gradcam++"), border_frac: float = 0.15,
                     face_boxes: pd.DataFrame | None = None, min_cells: int = 2,
                     progress: bool = True) -> tuple[dict[str, RunExplanation], dict[str, str]]:
    """`explain_run` of every subject's run: (subject -> explanation, subject -> why it was skipped)."""
    from lib.progress import tqdm

    explanations, skipped = {}, {}
    for r in tqdm(subjects.itertuples(), total=len(subjects), desc="runs", disable=not progress):
        out = explain_run(r.run_key, dataset, n_per_cell, seed, methods, border_frac, face_boxes, min_cells=min_cells)
        if isinstance(out, str):
            skipped[r.subject] = out
        else:
            explanations[r.subject] = out
    return explanations, skipped


def energy_table(explanations: dict[str, RunExplanation], subjects: pd.DataFrame,
                 border_frac: float = 0.15) -> pd.DataFrame:
    """Every explained image's energy shares (one row per method and image) with its subject, group and condition,
    and `border_expected`: the border band's area share at the run's input size (what a uniform map would give)."""
    from lib.report.explain import expected_border_share

    energy = pd.concat([e.energy.assign(subject=label) for label, e in explanations.items()], ignore_index=True)
    energy = energy.merge(subjects[["subject", "group", "condition"]], on="subject")
    energy["border_expected"] = [expected_border_share(s, s, border_frac) for s in energy["image_size"]]
    return energy


def explanation_notes(explanations: dict[str, RunExplanation], skipped: dict[str, str], energy: pd.DataFrame,
                      n_methods: int) -> list[str]:
    """How many runs and images were explained, then one indented line per skipped run with the reason."""
    return [f"explained {len(explanations)} runs ({len(energy) // max(n_methods, 1)} images); skipped {len(skipped)}:",
            *(f"  {label}: {why}" for label, why in skipped.items())]


def subject_status(subjects: pd.DataFrame, explanations: dict[str, RunExplanation]) -> pd.DataFrame:
    """The subject table with whether each run was explained and the size of its Grad-CAM map (e.g. "4x4")."""
    return subjects.assign(explained=subjects["subject"].isin(list(explanations)),
                           cam_grid=subjects["subject"].map({k: f"{e.grid[0]}x{e.grid[1]}"
                                                             for k, e in explanations.items()}))


def energy_vs_uniform(energy: pd.DataFrame, by: Sequence[str], value: str = "border_share",
                      expected: float | str = 0.0) -> pd.DataFrame:
    """Per group of `by`: mean share with its 95 % t-interval, the uniform expectation, and a two-sided Wilcoxon
    signed-rank test of share - expectation. `expected` is a number (e.g. the border band's area share) or a column
    name holding a per-image expectation (e.g. face_area_share). verdict: "above uniform", "below uniform" or
    "not different" from the interval of the mean difference."""
    rows = []
    for key, g in energy.groupby(list(by), sort=False):
        exp = g[expected] if isinstance(expected, str) else pd.Series(float(expected), index=g.index)
        keep = g[value].notna() & exp.notna()
        diff = (g.loc[keep, value] - exp[keep]).to_numpy()
        s = summarize(diff)
        p = math.nan
        if len(diff) >= 2 and np.any(diff != 0):
            p = float(sps.wilcoxon(diff).pvalue)
        word = {"supported": "above uniform", "contradicted": "below uniform",
                "inconclusive": "not different"}[verdict(s["ci_low"], s["ci_high"], "greater")]
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "n": s["n"], f"mean_{value}": float(g.loc[keep, value].mean()),
                     "expected": float(exp[keep].mean()) if keep.any() else math.nan, "mean_excess": s["mean"],
                     "excess_ci_low": s["ci_low"], "excess_ci_high": s["ci_high"], "wilcoxon_p": p, "finding": word})
    return pd.DataFrame(rows)


def energy_comparisons(energy: pd.DataFrame, by: str, pairs: Sequence[tuple[Any, Any]], within: Sequence[str] = (),
                       value: str = "border_share") -> pd.DataFrame:
    """Mann-Whitney U comparisons of `value` between levels a and b of `by` (per group of the `within` columns),
    via `lib.report.explain.compare_energy`; Holm over every row. Columns: within..., a, b, n_a, n_b, mean_a, mean_b,
    diff (a - b), p_value, p_holm. Pairs missing a level are skipped."""
    from lib.report.explain import compare_energy

    groups = energy.groupby(list(within), sort=False) if within else [((), energy)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        for a, b in pairs:
            sub = g[g[by].isin([a, b])]
            if sub.dropna(subset=[value])[by].nunique() < 2:
                continue
            cmp = compare_energy(sub, by=by, value=value).set_index(by)
            rows.append({**dict(zip(within, key)), "a": a, "b": b, "n_a": int(cmp.loc[a, "n"]),
                         "n_b": int(cmp.loc[b, "n"]), "mean_a": float(cmp.loc[a, "mean"]),
                         "mean_b": float(cmp.loc[b, "mean"]), "diff": float(cmp.loc[a, "mean"] - cmp.loc[b, "mean"]),
                         "p_value": float(cmp["p_value"].iloc[0])})
    table = pd.DataFrame(rows, columns=[*within, "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff", "p_value"])
    table["p_holm"] = holm(table["p_value"].to_numpy()) if len(table) else []
    return table


def face_excess(energy: pd.DataFrame, by: Sequence[str] = ("group", "subject", "method")) -> pd.DataFrame:
    """`energy_vs_uniform` of the face-box share against the box's area share, over the images with a detected
    face; empty when there is none."""
    has_face = energy["face_share"].notna()
    if not has_face.any():
        return pd.DataFrame()
    return energy_vs_uniform(energy[has_face], list(by), "face_share", expected="face_area_share")


def condition_comparisons(energy: pd.DataFrame, reference: str = "baseline",
                          values: Sequence[str] = ("border_share", "face_share")) -> pd.DataFrame:
    """Each Phase 2 condition against `reference` for the same model and method (`energy_comparisons` of each of
    `values`, Holm within each value), with `model_name` and `value` columns; empty without Phase 2 runs."""
    phase2 = energy[energy["group"] == "Phase 2"].assign(model_name=lambda t: t["subject"].str.split(" · ").str[0])
    if not len(phase2):
        return pd.DataFrame()
    pairs = [(c, reference) for c in phase2["condition"].unique() if c != reference]
    return pd.concat([energy_comparisons(phase2, "condition", pairs, within=["model_name", "method"], value=v)
                      .assign(value=v) for v in values], ignore_index=True)


def plot_group_cams(subjects: pd.DataFrame, explanations: dict[str, RunExplanation], method: str, n_show: int,
                    figures: str | Path) -> list[Path]:
    """One `plot_cam_rows` figure per group of explained subjects (Phase 2, Phase 3, architectures), saved as
    gradcam_<first word of the group>_<index>.png in `figures`; their paths."""
    explained = subjects[subjects["subject"].isin(list(explanations))]
    paths = []
    for i, (group, labels) in enumerate(explained.groupby("group", sort=False)["subject"]):
        path = Path(figures) / f"gradcam_{group.split()[0].lower()}_{i}.png"
        plot_cam_rows({k: explanations[k] for k in labels}, method, n_show, title=f"{method}: {group}", path=path)
        paths.append(path)
    return paths


def plot_method_comparison(explanations: dict[str, RunExplanation], methods: Sequence[str], n_show: int,
                           path: str | Path) -> list[Path]:
    """The first explained run once per CAM method, one row each, saved at `path`: [path], or [] with fewer than two
    methods or nothing explained."""
    if len(methods) < 2 or not explanations:
        return []
    first = next(iter(explanations))
    plot_cam_rows({m: explanations[first] for m in methods}, {m: m for m in methods}, n_show,
                  title=f"{first}: {' vs '.join(methods)}", path=path)
    return [Path(path)]


def plot_cams(explanation: RunExplanation, method: str = "gradcam", title: str = "", ncols: int = 8,
              path: str | Path | None = None):
    """Each explained image with its CAM overlaid, titled with its cell and probability."""
    from lib.report.explain import overlay
    from lib.report.plots import image_grid

    cams = explanation.cams[method]
    pictures = [overlay(img, cam) for img, cam in zip(explanation.images, cams)]
    ex = explanation.examples
    titles = [f"{c}\n{s} p={p:.2f}" for c, s, p in zip(ex["cell"], ex["source"], ex["probability"])]
    return image_grid(pictures, titles, ncols=max(1, min(ncols, len(pictures))), size=1.8,
                      suptitle=title or f"{method}: {explanation.model} @ {explanation.recipe.size} px", path=path)


def plot_cam_rows(explanations: dict[str, RunExplanation], method: str | dict[str, str] = "gradcam", n_show: int = 8,
                  title: str = "", path: str | Path | None = None):
    """One row per entry of `explanations` (row label -> run): `n_show` of its images (spread over the real/fake x
    correct/wrong cells) with the CAM of `method` overlaid (a dict gives each row label its own method)."""
    import matplotlib.pyplot as plt

    from lib.report.explain import overlay
    from lib.report.plots import save

    labels = list(explanations)
    if not labels:
        raise ValueError("plot_cam_rows: nothing to plot")
    fig, axes = plt.subplots(len(labels), n_show, figsize=(1.5 * n_show, 1.75 * len(labels)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r, label in enumerate(labels):
        e = explanations[label]
        pick = np.unique(np.linspace(0, len(e.images) - 1, min(n_show, len(e.images))).round().astype(int))
        for c, i in enumerate(pick):
            ax = axes[r, c]
            ax.imshow(overlay(e.images[i], e.cams[method[label] if isinstance(method, dict) else method][i]))
            ex = e.examples.iloc[i]
            ax.set_title(f"{ex['cell']}\np={ex['probability']:.2f}", fontsize=6)
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title or str(method))
    fig.tight_layout()
    return save(fig, path)


def plot_energy_excess(table: pd.DataFrame, label: str = "subject", title: str = "", path: str | Path | None = None):
    """Horizontal bars of `mean_excess` (share minus its uniform expectation) with 95 % intervals, one per row."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(t) + 1.2))
    err = np.vstack([t["mean_excess"] - t["excess_ci_low"], t["excess_ci_high"] - t["mean_excess"]])
    ax.barh(np.arange(len(t)), t["mean_excess"], xerr=np.nan_to_num(err), capsize=3,
            color=np.where(t["mean_excess"] > 0, "tab:red", "tab:blue"), alpha=0.7)
    ax.set_yticks(np.arange(len(t)), t[label].astype(str), fontsize=7)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="energy share minus the share of a uniform map (mean, 95 % CI)", title=title)
    fig.tight_layout()
    return save(fig, path)


# ----------------------------------------------------------------------------------------------- conclusions

def conclusions(n_explained: int, skipped: dict[str, str], fold: int, n_per_cell: int, border: pd.DataFrame,
                face: pd.DataFrame, real_fake: pd.DataFrame, conditions: pd.DataFrame, method: str) -> list[str]:
    """The notebook's conclusion lines for CAM `method`: what was explained, border and face-box energy against a
    uniform map, real vs fake, and each Phase 2 condition's border share against the reference."""
    lines = [f"Explained {n_explained} runs (fold {fold}, up to {4 * n_per_cell} test images each); "
             f"skipped {len(skipped)}" + (f": {', '.join(skipped)}" if skipped else "") + "."]
    b0 = border[border["method"] == method]
    for finding in ("above uniform", "below uniform", "not different"):
        names = b0.loc[b0["finding"] == finding, "subject"].tolist()
        if names:
            lines.append(f"{method} border energy {finding} (95 % CI of share - area share): {', '.join(names)}.")
    if len(face):
        f0 = face[face["method"] == method]
        lines.append(f"{method} energy inside the face box vs its area: " + "; ".join(
            f"{r.subject} {r.finding} ({r.mean_excess:+.3f})" for r in f0.itertuples()) + ".")
    lines.append(real_fake_line(real_fake, method))
    if len(conditions):
        c0 = conditions[(conditions["method"] == method) & (conditions["value"] == "border_share")]
        lines += [condition_line(r) for r in c0.itertuples()]
    return lines


def real_fake_line(real_fake: pd.DataFrame, method: str) -> str:
    """For how many runs the border share differs between real and fake images (and the means where it does)."""
    rows = real_fake[real_fake["method"] == method]
    sig = rows[rows["p_holm"] < SIGNIFICANCE]
    listed = ": " + ", ".join(f"{r.subject} (fake {r.mean_a:.3f} vs real {r.mean_b:.3f})"
                              for r in sig.itertuples()) if len(sig) else ""
    return (f"Border share differs between real and fake (Mann-Whitney, Holm p < 0.05) for {len(sig)} of "
            f"{len(rows)} runs" + listed + ".")


def condition_line(r: Any) -> str:
    """One sentence about a row (itertuples) of `condition_comparisons`: did condition a move the border share?"""
    moved = ("significantly " + ("more" if r.diff > 0 else "less") if r.p_holm < SIGNIFICANCE
             else "not significantly differently")
    return (f"{r.model_name}: {r.a} puts {r.mean_a:.3f} of the energy on the border vs {r.mean_b:.3f} for "
            f"{r.b} ({moved}; Holm p = {r.p_holm:.3g}).")


def headline_table(border: pd.DataFrame, method: str) -> pd.DataFrame:
    """The index page's table: border energy against a uniform map per explained run, for CAM `method`."""
    return border.loc[border["method"] == method, ["subject", "n", "mean_border_share", "expected", "mean_excess",
                                                    "excess_ci_low", "excess_ci_high", "finding"]]


def save_conclusions(profile: str, conclusions: Sequence[str], skipped: dict[str, str], explained: Sequence[str],
                     headline: pd.DataFrame, figures: Sequence[str | Path]) -> None:
    """gradcam_conclusions.json (lines, skipped runs with reasons, explained subjects) and the notebook's headline."""
    from lib.fileio import write_json
    from lib.paths import tables_dir
    from lib.report import save_headline

    write_json(tables_dir(profile) / "gradcam_conclusions.json",
               {"conclusions": list(conclusions), "skipped": skipped, "explained": list(explained)})
    save_headline(profile, "07_gradcam_deep_dive", headline, title="07 · Grad-CAM deep dive",
                  conclusions=conclusions, figures=figures)
