"""Phase 2 of the study (notebook 04_phase2_preprocessing): preprocessing impact and shortcut analysis.

Vocabulary:
- a *condition* is one (recipe, training configuration) trained on the shared split table by some models
  (`Condition`, `run_conditions`); its runs come from `lib.training.runstore` and are loaded, not retrained, when another
  notebook already trained the same thing (the Phase 2 baseline is Phase 1's configuration);
- an *arm* is one (condition or view, model): the unit `lib.evaluation.compare` scores (`level_intervals`,
  `compare_levels` wrap `metric_intervals` / `compare_family` over arms, so every model is compared with itself);
- an *evaluation view* re-scores stored checkpoints on images preprocessed by another recipe, with each run's own
  normalisation and no augmentation (`evaluate_runs`);
- a *neutraliser* is the condition that removes a shortcut the metadata probe can flag (`SHORTCUTS`): geometry ->
  centre crop, compression (JPEG quality, bytes per pixel, file format) -> every image re-encoded at one JPEG quality.

The statistical protocol (README, "Statistical protocol"): every choice (the recommendation, the shortcut flags it
reads) is made on the train+validation part only: the out-of-fold validation predictions ("oof") for model scores,
the train+validation images for the metadata probes and the face detection rates. The test hold-out is scored for the
report and the pre-registered comparisons (`compare_family` on "oof" and "test": Holm-stepped group-bootstrap
intervals, one family per question and set); it is never read by a choice (`require_validation` guards `recommend`).
Fold-level numbers (`run_metrics`) stay as a descriptive training-noise view.

The computed rules of the notebook live here, so they are tested: the geometry-shortcut decision
(`geometry_shortcut`), the augmentation interpretation of the study plan (`interpret_augmentation`), the source
hold-out flag (`holdout_comparison`), the neutraliser table (`neutraliser_table`) and the recommendation for Phase 3
(`recommend`). The notebook's steps live here too, down to its computed `conclusions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from lib.progress import tqdm

from lib.evaluation import compare
from lib.evaluation.compare import N_BOOT, require_validation
from lib.evaluation.stats import summarize, verdict
from lib.fileio import read_table, stable_hash, write_table
from lib.evaluation.metrics import binary_metrics, per_source_metrics
from lib.paths import CACHE_DIR, RUNS_DIR
from lib.data.augment import AugmentPolicy
from lib.data.recipes import Recipe
from lib.data.splits import part_indices
from lib.training.fit import TrainConfig
from lib.studies.common import baseline_recipe, named_sources
from lib.studies.eda import SHORTCUT_FAMILIES, family_features

SUBPHASES = {
    "2A": "shortcut analysis",
    "2B": "resolution",
    "2C": "face crop",
    "2D": "augmentation",
    "2E": "augmentation + face crop",
}
PARTS = ("train", "val", "test", "holdout")
BASELINE = "baseline"  # Phase 1's configuration; every other condition is compared with it
GEOMETRY_FEATURES = ["width", "height", "aspect"]
ARM = " · "  # joins a condition (or view) and a model into one compared arm
SELECTION_SET = "oof"  # the only evaluation set a choice reads
_EVAL_VERSION = 1  # bump when evaluate_runs changes what it stores


# The shortcuts notebook 01's metadata probe can flag and the condition that neutralises each (one definition, in eda).
SHORTCUTS = {family.name: family for family in SHORTCUT_FAMILIES}


# --------------------------------------------------------------------------------------------- conditions
@dataclass(frozen=True)
class Condition:
    """One Phase 2 condition: a recipe and a training configuration, trained by ``models`` on the shared splits."""

    name: str
    subphase: str
    recipe: Recipe
    train: TrainConfig
    models: tuple[str, ...]
    description: str = ""
    model_kwargs: dict[str, Any] | None = None  # passed to every model of the condition (e.g. a smaller width)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a Condition needs a name")
        if self.subphase not in SUBPHASES:
            raise ValueError(f"unknown subphase {self.subphase!r}; valid: {', '.join(SUBPHASES)}")
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise ValueError(f"condition {self.name!r} has no model to train")

    @property
    def needs_boxes(self) -> bool:
        return self.recipe.needs_boxes

    def row(self) -> dict[str, Any]:
        """A one-line description for a table of conditions."""
        aug = self.train.augment
        return {"condition": self.name, "subphase": self.subphase, "recipe": self.recipe.mode,
                "size": self.recipe.size, "normalization": self.train.normalization,
                "augment": "yes" if aug is not None else "no", "models": ", ".join(self.models),
                "description": self.description}


def condition_table(conditions: Sequence[Condition]) -> pd.DataFrame:
    names = [c.name for c in conditions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"condition names must be unique, repeated: {duplicated}")
    return pd.DataFrame([c.row() for c in conditions])


def run_conditions(dataset: Any, splits: pd.DataFrame, conditions: Sequence[Condition],
                   boxes: np.ndarray | None = None, folds: Iterable[int] | None = None,
                   runs_dir: str | Path = RUNS_DIR, cache_dir: str | Path = CACHE_DIR,
                   progress: bool = True) -> pd.DataFrame:
    """Train (or load) every fold of every model of every condition: the `run_cv` tables with `condition` and
    `subphase` columns. ``boxes`` ((N, 4) face boxes, NaN rows = no face) go only to face-crop conditions."""
    from lib.training.runstore import CVJob, run_cv_many

    condition_table(conditions)  # validates unique names
    for cond in conditions:
        if cond.needs_boxes and boxes is None:
            raise ValueError(f"condition {cond.name!r} crops faces: pass the face boxes")
    pairs = [(cond, model) for cond in conditions for model in cond.models]
    if not pairs:
        raise ValueError("run_conditions: no condition given")
    jobs = [CVJob(cond.recipe, model, cond.train, cond.model_kwargs or None, boxes if cond.needs_boxes else None)
            for cond, model in pairs]
    tables = run_cv_many(dataset, splits, jobs, folds=folds, runs_dir=runs_dir, progress=progress, cache_dir=cache_dir)
    return pd.concat([cv.assign(condition=cond.name, subphase=cond.subphase) for (cond, _), cv in zip(pairs, tables)],
                     ignore_index=True)


def check_model_subsets(models: Sequence[str], condition_models: Sequence[str], holdout_models: Sequence[str]) -> None:
    """The conditions and the hold-out train only Phase 1 models: the baseline runs they are compared with are theirs."""
    extra = sorted((set(condition_models) | set(holdout_models)) - set(models))
    if extra:
        raise ValueError(f"condition_models and holdout_models must be among models {list(models)}; not found: {extra}")


def phase2_conditions(config: TrainConfig, image_size: int, high_size: int, models: Sequence[str],
                      condition_models: Sequence[str], face_margin: float, face_min_confidence: float,
                      augment: dict[str, Any], jpeg_quality: int = 75, skip: Sequence[str] = ()) -> list[Condition]:
    """The notebook's conditions: Phase 1's baseline (``config``, square resize, every model) and the conditions that
    change one thing of it (2E and `center_crop_jpeg` two), trained by ``condition_models``; the neutraliser of every
    shortcut of `SHORTCUTS` is among them (`center_crop`, `jpeg`: both classes re-encoded at ``jpeg_quality``).
    ``skip``: condition names not trained (the baseline always is)."""
    base = baseline_recipe(image_size)
    face = Recipe(size=image_size, mode="face", face_margin=face_margin, face_detector=f"mtcnn@{face_min_confidence}")
    augmented = replace(config, augment=AugmentPolicy(**augment))
    cm = tuple(condition_models)
    q = int(jpeg_quality)
    conditions = [
        Condition(BASELINE, "2A", base, config, tuple(models), "Phase 1: square resize, ImageNet normalisation, no augmentation"),
        Condition("norm_real_train", "2A", base, replace(config, normalization="train_real"), cm,
                  "normalised with the statistics of the fold's real training images"),
        Condition("center_crop", "2A", Recipe(size=image_size, mode="center_crop"), config, cm,
                  "geometry-neutral training: largest centred square, the same scaling for every image"),
        Condition("jpeg", "2A", replace(base, jpeg_quality=q), config, cm,
                  f"compression-neutral training: every image of both classes re-encoded as JPEG q{q}, then the "
                  f"baseline resize"),
        Condition("center_crop_jpeg", "2A", Recipe(size=image_size, mode="center_crop", jpeg_quality=q), config, cm,
                  f"both neutralisers: JPEG q{q} re-encoding and the centre crop"),
        Condition(f"resolution_{high_size}", "2B", Recipe(size=high_size), config, cm, f"square resize to {high_size} px"),
        Condition("face_crop", "2C", face, config, cm, "MTCNN face crop, centre crop when no face is found"),
        Condition("augment", "2D", base, augmented, cm, "training-time augmentation"),
        Condition("augment_face_crop", "2E", face, augmented, cm, "augmentation + face crop"),
    ]
    names = [c.name for c in conditions]
    unknown = sorted(set(skip) - set(names))
    if unknown:
        raise ValueError(f"skip_conditions: unknown condition(s) {unknown}; the conditions are {names}")
    if BASELINE in skip:
        raise ValueError("skip_conditions: the baseline cannot be skipped (every condition is compared with it)")
    return [c for c in conditions if c.name not in set(skip)]


def fake_sources(manifest: pd.DataFrame) -> list[str]:
    """The dataset's fake sources, sorted."""
    return sorted(manifest.loc[manifest["label"] == 1, "source"].unique())


def sources_to_hold_out(manifest: pd.DataFrame, requested: Sequence[str], data_root: str = "") -> tuple[list[str], str]:
    """The fake sources named in params that this dataset has (see `named_sources`), every fake source when none
    is left, and the note about names the dataset lacks."""
    named, note = named_sources(manifest, requested, data_root)
    return named or fake_sources(manifest), note


def describe_setup(manifest: pd.DataFrame, splits: pd.DataFrame, baseline: Condition) -> str:
    """One line: images, folds, fake sources, the baseline recipe and training configuration."""
    from lib.data.splits import fold_ids

    return (f"{len(manifest)} images, {len(fold_ids(splits))} folds; fake sources {fake_sources(manifest)}; "
            f"baseline {baseline.recipe}; {baseline.train}")


def training_overview(cv: pd.DataFrame) -> pd.DataFrame:
    """Per (condition, model) of a `run_conditions` table: runs, how many were trained now (not loaded), seconds and
    the fold means of the validation and test AUC (descriptive: the group-bootstrap intervals come later)."""
    return cv.groupby(["condition", "model"], sort=False).agg(runs=("fold", "size"), trained_now=("trained", "sum"),
                                                               seconds=("seconds", "sum"), val_auc=("val_auc", "mean"),
                                                               test_auc=("test_auc", "mean"))



# ------------------------------------------------------------------------------------------------ face boxes
def face_boxes_and_rates(manifest: pd.DataFrame, min_confidence: float = 0.9) -> tuple[np.ndarray, pd.DataFrame]:
    """MTCNN face boxes ((N, 4) x0, y0, x1, y1; NaN rows = no face; cached by image content) and the detection rate
    per source and class (`faces.detection_rates`)."""
    from lib.data import faces

    table = faces.face_boxes(manifest, min_confidence=min_confidence)
    return table[["x0", "y0", "x1", "y1"]].to_numpy(dtype=float), faces.detection_rates(manifest, table)


def class_face_rates(rates: pd.DataFrame) -> dict[str, float]:
    """Share of real and of fake images with a detected face, from `faces.detection_rates` (NaN for a missing class)."""
    by_class = rates.groupby("class")[["n", "faces"]].sum().assign(rate=lambda t: t["faces"] / t["n"])["rate"]
    return {cls: float(by_class.get(cls, np.nan)) for cls in ("real", "fake")}


def face_rate_gap(rates: pd.DataFrame) -> float:
    """|real - fake| face detection rate: above a tolerance, the face crop itself tells the classes apart."""
    by_class = class_face_rates(rates)
    return float(abs(by_class["real"] - by_class["fake"]))



# --------------------------------------------------------------------------------------- evaluation views
def geometry_views(size: int, pad_value: int = 0) -> dict[str, Recipe]:
    """The three ways of showing an image to a square model, for the geometry analysis.

    - ``resize``: the training view (square resize: a rectangular image is squashed, a square one only scaled);
    - ``letterbox_real``: real images letterboxed (scaled without distortion, padded to a square), fakes resized;
    - ``center_crop``: largest centred square then resize, for every image: when reals are rectangular and fakes
      square with the reals' short side, both classes get exactly the same isotropic scaling (no geometry cue).
    """
    return {
        "resize": Recipe(size=size, mode="resize"),
        "letterbox_real": Recipe(size=size, mode="letterbox", letterbox_apply_to="real", pad_value=pad_value),
        "center_crop": Recipe(size=size, mode="center_crop"),
    }


def evaluate_runs(cv: pd.DataFrame, dataset: Any, splits: pd.DataFrame, recipe: Recipe,
                  parts: Sequence[str] = ("train", "val", "test"), boxes: np.ndarray | None = None,
                  keep: Sequence[str] = ("condition",), runs_dir: str | Path = RUNS_DIR,
                  cache_dir: str | Path = CACHE_DIR, progress: bool = True) -> pd.DataFrame:
    """Probabilities of the stored checkpoints of ``cv`` (a `run_cv` table) on images preprocessed by ``recipe``.

    Every run is scored with the normalisation it was trained with (mean/std recorded in its metrics), in
    evaluation mode and never augmented, on the requested ``parts`` of its own fold ("train" = the fold's
    training part). One row per (run, image), with the columns of `collect_predictions` plus the ``keep`` columns
    of ``cv``. Scores are cached per (run, pixels, parts) under ``cache_dir/phase2_eval``.
    """
    from lib.data.cache import build_cache, cache_key
    from lib.training.runstore import load_model, load_run, split_key
    from lib.training.fit import predict

    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ValueError(f"parts must be a non-empty subset of {PARTS}, got {list(parts)}")
    missing = {"run_key", "fold", *keep} - set(cv.columns)
    if missing:
        raise KeyError(f"evaluate_runs: the run table lacks column(s) {sorted(missing)}")
    if recipe.needs_boxes and boxes is None:
        raise ValueError("evaluate_runs: a face-crop recipe needs the face boxes")
    manifest = dataset.manifest
    if len(splits) != len(manifest):
        raise ValueError(f"split table ({len(splits)} rows) is not aligned with the manifest ({len(manifest)} rows)")
    boxes = boxes if recipe.needs_boxes else None
    images = build_cache(manifest, recipe, boxes=boxes, cache_dir=cache_dir, progress=False)
    pixels = cache_key(manifest, recipe, boxes)
    splits_key = split_key(splits)
    cols = [c for c in ("path", "label", "source", "group") if c in manifest.columns]
    frames = []
    for _, row in tqdm(cv.iterrows(), total=len(cv), desc=f"score {recipe.mode} {recipe.size}px", disable=not progress,
                       leave=False):
        run = load_run(Path(runs_dir) / row["run_key"])
        spec = run.spec
        if spec.dataset != dataset.fingerprint:
            raise ValueError(f"run {row['run_key']} was trained on another dataset ({spec.dataset})")
        if spec.split_key != splits_key:
            raise ValueError(f"run {row['run_key']} was trained on another split table; pass the splits it used")
        if spec.recipe.size != recipe.size:
            raise ValueError(f"run {row['run_key']} was trained at {spec.recipe.size} px; a view must keep that size "
                             f"(got {recipe.size} px)")
        path = Path(cache_dir) / "phase2_eval" / (stable_hash(
            {"version": _EVAL_VERSION, "run": row["run_key"], "pixels": pixels, "parts": list(parts)}) + ".parquet")
        if path.exists():
            frame = read_table(path)
        else:
            model = load_model(run.run_dir)
            norm = run.metrics["normalization"]
            index = part_indices(splits, spec.fold)
            scored = []
            for part in parts:
                idx = index[part]
                if len(idx) == 0:
                    continue
                prob = predict(model, images, idx, batch_size=spec.train.eval_batch_size, mean=norm["mean"],
                               std=norm["std"], device=spec.train.device, amp=spec.train.amp)
                f = manifest.iloc[idx][cols].reset_index(drop=True)
                f.insert(0, "row", np.asarray(idx, dtype=np.int64))
                scored.append(f.assign(split=part, fold=spec.fold, probability=prob))
            frame = pd.concat(scored, ignore_index=True)
            write_table(path, frame)
        frame.insert(0, "run_key", row["run_key"])
        frame.insert(0, "model", spec.model)
        for column in keep:
            frame[column] = row[column]
        frames.append(frame)
    if not frames:
        raise ValueError("evaluate_runs: the run table is empty")
    return pd.concat(frames, ignore_index=True)


def run_normalization(run_key: str, runs_dir: str | Path = RUNS_DIR) -> dict[str, list[float]]:
    """The (mean, std) a stored run was trained and evaluated with: {"mean": [r, g, b], "std": [r, g, b]}."""
    from lib.training.runstore import load_run

    return load_run(Path(runs_dir) / run_key).metrics["normalization"]


def normalization_table(cv: pd.DataFrame, condition: str = "norm_real_train",
                        runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """Per run of ``condition``: fold, model and the per-channel mean and std it was normalised with (mean_R ... std_B)."""
    rows = []
    for _, run in cv[cv["condition"] == condition].iterrows():
        stats = run_normalization(run["run_key"], runs_dir=runs_dir)
        rows.append({"fold": run["fold"], "model": run["model"],
                     **{f"{k}_{c}": v for k in ("mean", "std") for c, v in zip("RGB", stats[k])}})
    return pd.DataFrame(rows)


def score_conditions(cv: pd.DataFrame, dataset: Any, splits: pd.DataFrame, conditions: Sequence[Condition],
                     boxes: np.ndarray | None = None, runs_dir: str | Path = RUNS_DIR,
                     cache_dir: str | Path = CACHE_DIR, progress: bool = True) -> pd.DataFrame:
    """Predictions of every run of ``cv`` (a `run_conditions` table): the stored validation/test predictions plus
    the fold's training part scored by the final model under the condition's own recipe (for the train/val gap)."""
    from lib.training.runstore import collect_predictions

    by_name = {c.name: c for c in conditions}
    frames = []
    for name, runs in tqdm(cv.groupby("condition", sort=False), desc="score training parts", disable=not progress):
        if name not in by_name:
            raise ValueError(f"score_conditions: condition {name!r} of the run table is not in the conditions")
        cond = by_name[name]
        stored = collect_predictions(runs, runs_dir=runs_dir).merge(runs[["run_key", "condition"]], on="run_key")
        train = evaluate_runs(runs, dataset, splits, cond.recipe, parts=("train",), boxes=boxes, runs_dir=runs_dir,
                              cache_dir=cache_dir, progress=False)
        frames += [stored, train]
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------ per-run metrics
def source_auc_variance(test_predictions: pd.DataFrame) -> tuple[float, int]:
    """(variance, number of sources) of the per-source AUC over the FAKE sources present (each source's fakes
    against every real image of the table); sample variance (ddof=1), NaN with fewer than two sources."""
    table = per_source_metrics(test_predictions)
    aucs = table.loc[table["label"] == 1, "auc"].dropna()
    return (float(aucs.var(ddof=1)) if len(aucs) >= 2 else math.nan), int(len(aucs))


def run_metrics(predictions: pd.DataFrame, by: Sequence[str] = ("condition", "model"),
                source_split: str = "test") -> pd.DataFrame:
    """One row per run: ``<part>_auc`` for every scored part, ``gap`` = train_auc - val_auc (NaN when a part is
    missing), ``source_auc_var`` and ``n_sources`` (see `source_auc_variance`, on ``source_split``)."""
    keys = [*by, "fold", "run_key"]
    missing = set(keys + ["split", "label", "probability", "source"]) - set(predictions.columns)
    if missing:
        raise KeyError(f"run_metrics: missing column(s) {sorted(missing)}")
    rows = []
    for key, group in predictions.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        for part, scored in group.groupby("split", sort=False):
            row[f"{part}_auc"] = binary_metrics(scored["label"].to_numpy(), scored["probability"].to_numpy())["auc"]
        row["gap"] = row.get("train_auc", math.nan) - row.get("val_auc", math.nan)
        part = group[group["split"] == source_split]
        row["source_auc_var"], row["n_sources"] = source_auc_variance(part) if len(part) else (math.nan, 0)
        rows.append(row)
    out = pd.DataFrame(rows)
    for col in ("train_auc", "val_auc", "test_auc"):
        if col not in out:
            out[col] = math.nan
    return out





# ------------------------------------------------------------------------------- what a choice may read
def selection_rows(splits: pd.DataFrame) -> np.ndarray:
    """Row positions of the train+validation part of the split table: what every choice may read (never the test
    hold-out, never a held-out source)."""
    return np.flatnonzero(splits["split"].to_numpy() == "trainval")


def selection_part(manifest: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """The manifest rows of the train+validation part (`selection_rows`), re-indexed from 0."""
    if len(splits) != len(manifest):
        raise ValueError(f"split table ({len(splits)} rows) is not aligned with the manifest ({len(manifest)} rows)")
    return manifest.iloc[selection_rows(splits)].reset_index(drop=True)


def metadata_probe(manifest: pd.DataFrame, features: Sequence[str], n_folds: int = 5, seed: int = 42) -> dict[str, Any]:
    """`lib.studies.eda.shortcut_probe` restricted to ``features``: a group-aware cross-validated AUC of a classifier
    that sees nothing but these metadata; ``flagged`` when its 95 % interval's lower bound exceeds 0.6."""
    from lib.studies.eda import shortcut_probe

    probe = shortcut_probe(manifest, n_folds=n_folds, seed=seed, features=list(features))
    return ({k: v for k, v in probe.items() if k != "importance"}
            | {"features": list(features), **compare.group_counts(manifest)})


def geometry_probe(manifest: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> dict[str, Any]:
    """`metadata_probe` on the original geometry (width, height, aspect ratio)."""
    return metadata_probe(manifest, GEOMETRY_FEATURES, n_folds=n_folds, seed=seed)


def shortcut_probes(manifest: pd.DataFrame, splits: pd.DataFrame, n_folds: int = 5,
                    seed: int = 42) -> dict[str, dict[str, Any]]:
    """One `metadata_probe` per shortcut of `SHORTCUTS`, on the train+validation images only (a shortcut flag feeds
    the recommendation, so it never reads the test hold-out)."""
    part = selection_part(manifest, splits)
    return {name: metadata_probe(part, family_features(part, s), n_folds=n_folds, seed=seed)
            for name, s in SHORTCUTS.items()}


def probe_table(probes: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per probed shortcut: features, AUC with its fold interval, flag and the groups behind it."""
    keep = ["features", "auc_mean", "auc_ci_low", "auc_ci_high", "auc_n", "flagged", "real_groups", "fake_groups",
            "real_images", "fake_images"]
    return pd.DataFrame([{"shortcut": name, **{k: p.get(k) for k in keep}} for name, p in probes.items()]).assign(
        features=lambda t: t["features"].map(", ".join))


# ------------------------------------------------------------------------------- arms: (level, model)
def with_arm(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """``frame`` with an ``arm`` column "<level of by> · <model>" (the unit `compare` scores)."""
    return frame.assign(arm=frame[by].astype(str) + ARM + frame["model"].astype(str))


def level_intervals(predictions: pd.DataFrame, by: str = "condition", sets: Sequence[str] = compare.SETS,
                    n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """`compare.metric_intervals` of the AUC per (level of ``by``, model) and evaluation set: estimate, group-bootstrap
    interval, real/fake groups and images behind it. Columns: by, model, set, metric, estimate, ci_low, ci_high, ..."""
    arms = with_arm(predictions, by)
    keys = arms.drop_duplicates("arm").set_index("arm")[[by, "model"]]
    table = compare.metric_intervals(arms, by="arm", sets=sets, metrics=("auc",), n_boot=n_boot, seed=seed)
    if table.empty:
        return pd.DataFrame(columns=[by, "model", "set", "metric", "estimate", "ci_low", "ci_high"])
    return pd.concat([keys.loc[table["arm"]].reset_index(drop=True), table.drop(columns="arm")], axis=1)


def level_pairs(predictions: pd.DataFrame, by: str, reference: str, levels: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(level, reference) for every level of ``by`` other than the reference (in order of appearance)."""
    present = list(dict.fromkeys(predictions[by]))
    chosen = present if levels is None else [lv for lv in levels if lv in present]
    return [(lv, reference) for lv in chosen if lv != reference]


def compare_levels(predictions: pd.DataFrame, by: str, pairs: Sequence[tuple[str, str]],
                   sets: Sequence[str] = compare.SETS, direction: str = "greater", n_boot: int = N_BOOT,
                   seed: int = 0) -> pd.DataFrame:
    """The one comparison rule (`compare.compare_family`) for levels of ``by`` (conditions, views) within each model:
    each pair (a, b) becomes the arm pair (a · m, b · m) for every model m that ran both; one call, so one Holm family
    per evaluation set over every model's pairs. Columns: model, then `compare.FAMILY_COLUMNS` with ``a`` / ``b`` the
    levels (the ``claim`` names the arms)."""
    arms = with_arm(predictions, by)
    present = arms.groupby("model", sort=False)[by].agg(lambda s: set(s))
    arm_pairs, meta = [], {}
    for a, b in pairs:
        for model, levels in present.items():
            if a in levels and b in levels:
                pair = (f"{a}{ARM}{model}", f"{b}{ARM}{model}")
                arm_pairs.append(pair)
                meta[pair] = (model, a, b)
    if not arm_pairs:
        return pd.DataFrame(columns=["model", *compare.FAMILY_COLUMNS])
    table = compare.compare_family(arms, "arm", arm_pairs, sets=sets, metrics=("auc",), direction=direction,
                                   n_boot=n_boot, seed=seed)
    found = [meta[(a, b)] for a, b in zip(table["a"], table["b"])]
    table["a"], table["b"] = [f[1] for f in found], [f[2] for f in found]
    table.insert(0, "model", [f[0] for f in found])
    return table


# ------------------------------------------------------------------------------------------------ geometry
def geometry_by_class(manifest: pd.DataFrame) -> pd.DataFrame:
    """Original geometry per class: images, share of square images, aspect ratio range and median."""
    frame = manifest.assign(aspect=manifest["width"] / manifest["height"],
                            cls=np.where(manifest["label"] == 1, "fake", "real"))
    out = frame.groupby("cls").agg(n=("aspect", "size"), square=("aspect", lambda a: float(np.mean(a == 1.0))),
                                   aspect_min=("aspect", "min"), aspect_median=("aspect", "median"),
                                   aspect_max=("aspect", "max"))
    return out.reindex(["real", "fake"]).rename_axis("class").reset_index()


def carries_geometry_cue(recipe: Recipe) -> bool:
    """Does this recipe leave the original geometry visible to the model? A square resize squashes rectangular
    images (their resampling differs from square ones), a letterbox pads them (bars); a centre crop or a face crop
    (square box, centre-crop fallback) treats every image alike."""
    return recipe.mode in ("resize", "letterbox")


def score_geometry_views(baseline: Condition, cv: pd.DataFrame, predictions: pd.DataFrame, dataset: Any,
                         splits: pd.DataFrame, views: dict[str, Recipe], training_view: str = "resize",
                         runs_dir: str | Path = RUNS_DIR, cache_dir: str | Path = CACHE_DIR) -> pd.DataFrame:
    """Predictions of the baseline runs under every view (column ``view``). The training view is the baseline's own
    scoring (its rows of ``predictions``, a `score_conditions` table); the other views are re-scored (`evaluate_runs`)."""
    if views[training_view] != baseline.recipe:
        raise ValueError(f"the training view {training_view!r} must be the baseline recipe {baseline.recipe}")
    runs = cv[cv["condition"] == baseline.name]
    own = predictions[predictions["condition"] == baseline.name].assign(view=training_view)
    rescored = [evaluate_runs(runs, dataset, splits, recipe, runs_dir=runs_dir, cache_dir=cache_dir,
                              progress=False).assign(view=name)
                for name, recipe in views.items() if name != training_view]
    return pd.concat([own, *rescored], ignore_index=True)


# ------------------------------------------------------------------------------------------ source hold-out
def heldout_scores(predictions: pd.DataFrame, source: str) -> pd.DataFrame:
    """Per run trained WITHOUT ``source``: ``heldout_auc`` = AUC of the held-out fakes ("holdout" rows) against
    the real images of the test part, and ``test_auc`` on the test part (sources seen in training)."""
    rows = []
    for (model, fold, key), group in predictions.groupby(["model", "fold", "run_key"], sort=False):
        test = group[group["split"] == "test"]
        held = group[(group["split"] == "holdout") & (group["source"] == source)]
        pooled = pd.concat([test[test["label"] == 0], held])
        rows.append({"model": model, "fold": fold, "run_key": key, "source": source, "n_heldout": int(len(held)),
                     "heldout_auc": binary_metrics(pooled["label"], pooled["probability"])["auc"],
                     "test_auc": binary_metrics(test["label"], test["probability"])["auc"]})
    return pd.DataFrame(rows)




# ------------------------------------------------------------------------------------------------ geometry
GEOMETRY_RULE = (
    "Geometry shortcut detected = the original image geometry alone (width, height, aspect ratio) predicts the label "
    "on the train+validation images: the group-aware cross-validated AUC of a classifier on these three numbers has a "
    "95 % interval above 0.6. Exploited = detected AND showing the images through the geometry-neutral view (centre "
    "crop: both classes get the same isotropic scaling) lowers the baseline checkpoints' AUC on the out-of-fold "
    "validation predictions (claim 'view < resize' supported: Holm-stepped group-bootstrap interval entirely below 0) "
    "for at least one model. The test hold-out's verdicts are reported beside it."
)


def geometry_shortcut(probe: dict[str, Any], view_tests: pd.DataFrame, neutral_view: str = "center_crop",
                      set_name: str = SELECTION_SET) -> dict[str, Any]:
    """The computed geometry-shortcut decision (see `GEOMETRY_RULE`).

    ``probe``: a `geometry_probe` result (needs ``flagged``, ``auc_mean``, ``auc_ci_low``, ``auc_ci_high``).
    ``view_tests``: `compare_levels(..., by="view", direction="less")` rows (columns model, a, set, diff, verdict);
    the decision reads the rows of ``set_name``.
    """
    for key in ("flagged", "auc_mean", "auc_ci_low", "auc_ci_high"):
        if key not in probe:
            raise KeyError(f"geometry_shortcut: the probe lacks {key!r}")
    present = bool(probe["flagged"])
    rows = (view_tests[(view_tests["a"] == neutral_view) & (view_tests["set"] == set_name)]
            if len(view_tests) else view_tests)
    if len(view_tests) and rows.empty:
        raise ValueError(f"geometry_shortcut: no comparison of the view {neutral_view!r} on the {set_name!r} set")
    drops = {str(r["model"]): float(r["diff"]) for _, r in rows.iterrows()}
    exploited_by = sorted(str(r["model"]) for _, r in rows.iterrows() if r["verdict"] == "supported")
    return {
        "detected": present,
        "exploited": present and bool(exploited_by),
        "exploited_by": exploited_by,
        "probe_auc_mean": float(probe["auc_mean"]),
        "probe_auc_ci": [float(probe["auc_ci_low"]), float(probe["auc_ci_high"])],
        "neutral_view": neutral_view,
        "neutral_view_auc_change": drops,
        "decision_set": set_name,
        "rule": GEOMETRY_RULE,
    }


@dataclass
class GeometryAnalysis:
    """What the 2A geometry question computes (see `geometry_analysis`)."""

    by_class: pd.DataFrame  # `geometry_by_class`
    probe: dict[str, Any]  # `geometry_probe` on the train+validation images
    view_runs: pd.DataFrame  # `run_metrics` per (view, model): the descriptive fold view
    view_intervals: pd.DataFrame  # `level_intervals` per (view, model, set)
    view_tests: pd.DataFrame  # `compare_levels`: every view against the training view, a drop is the claim
    view_summary: pd.DataFrame  # `summary_rows` of the views
    decision: dict[str, Any]  # `geometry_shortcut`

    def probe_table(self) -> pd.DataFrame:
        """The probe's result as one row, without the per-fold AUCs."""
        return pd.DataFrame([{k: v for k, v in self.probe.items() if k not in ("fold_auc", "features")}])

    def record(self, dataset_card: dict[str, Any] | None) -> dict[str, Any]:
        """The JSON record: the decision, the probe, the per-class geometry and the embedded dataset's geometry switch."""
        card_switch = (dataset_card or {}).get("params", {}).get("geometry_shortcut")
        return self.decision | {"probe": self.probe, "by_class": self.by_class.to_dict("records"),
                                "card_geometry_shortcut": card_switch}


def geometry_analysis(manifest: pd.DataFrame, view_predictions: pd.DataFrame, probe: dict[str, Any],
                      training_view: str = "resize", neutral_view: str = "center_crop", n_boot: int = N_BOOT,
                      seed: int = 0) -> GeometryAnalysis:
    """Is the original geometry a shortcut, and do the baseline checkpoints use it? The geometry-only ``probe``
    (`shortcut_probes`, train+validation images), the AUC of every (view, model) with its group-bootstrap interval,
    each view against the training view (`compare_levels`, direction "less", oof and test) and the decision of
    `GEOMETRY_RULE`; the per-run metrics of ``view_predictions`` (`score_geometry_views`) as the fold view."""
    by_class = geometry_by_class(manifest)
    view_runs = run_metrics(view_predictions, by=("view", "model"))
    intervals = level_intervals(view_predictions, "view", n_boot=n_boot, seed=seed)
    tests = compare_levels(view_predictions, "view", level_pairs(view_predictions, "view", training_view),
                           direction="less", n_boot=n_boot, seed=seed)
    decision = geometry_shortcut(probe, tests, neutral_view=neutral_view)
    summary = summary_rows(intervals, tests, by="view", reference=training_view, kind=VIEW_KIND, runs=view_runs)
    return GeometryAnalysis(by_class, probe, view_runs, intervals, tests, summary, decision)


# ------------------------------------------------------------------------------------------ source hold-out
HOLDOUT_RULE = (
    "Source hold-out, per fake source and model: the AUC of the source's fakes scored by models trained WITHOUT it "
    "(its own split table) against the AUC of the same source's fakes scored by the baseline models trained WITH it, "
    "both against the SAME real test photographs (the reals both split tables hold out for test), each side the mean "
    "probability of its fold models. Paired over groups: the same resampled photographs weight both sides "
    "(`compare_auc_shared_negatives`), one Holm family over the (source, model) pairs. Flagged = the claim "
    "'held-out AUC < in-source AUC' is supported (the Holm-stepped interval lies entirely below 0): that source's "
    "own artefacts were learnt, not a cue shared with the other generators."
)


def holdout_arms(baseline_predictions: pd.DataFrame, heldout_predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The two sides of every source hold-out, as fold ensembles (one row per arm and image): arm
    "<model> · without <source>" = the models trained without the source: real test images + the source's held-out
    fakes; arm "<model> · with <source>" = the baseline models: real test images + the source's test fakes.
    ``heldout_predictions``: source -> `collect_predictions` of the runs trained without it."""
    base = compare.fold_ensemble(baseline_predictions, "model", "test")
    frames = []
    for source, preds in heldout_predictions.items():
        test = compare.fold_ensemble(preds, "model", "test")
        held = compare.fold_ensemble(preds, "model", "holdout")
        without = pd.concat([test[test["label"] == 0], held[(held["label"] == 1) & (held["source"] == source)]])
        within = base[((base["label"] == 0) | (base["source"] == source)) & base["model"].isin(set(without["model"]))]
        for side, frame in (("without", without), ("with", within)):
            frames.append(frame.assign(held_source=source, side=side,
                                       arm=frame["model"].astype(str) + f"{ARM}{side} {source}"))
    if not frames:
        raise ValueError("holdout_arms: no held-out source")
    return pd.concat(frames, ignore_index=True)


def holdout_comparison(arms: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """`HOLDOUT_RULE` on `holdout_arms`: one row per (model, source) with the held-out AUC (estimate_a, a_ci_*), the
    in-source AUC on the same real images (estimate_b, b_ci_*), the difference held-out - in-source with its
    Holm-stepped interval, p, verdict of the claim 'held-out < in-source', group counts and ``flagged``."""
    pairs, meta = [], {}
    for (source, model), _ in arms.groupby(["held_source", "model"], sort=False):
        pair = (f"{model}{ARM}without {source}", f"{model}{ARM}with {source}")
        if set(pair) <= set(arms["arm"]):
            pairs.append(pair)
            meta[pair] = (model, source)
    table = compare.compare_auc_shared_negatives(arms, "arm", pairs, direction="less", set_name="test", n_boot=n_boot,
                                         seed=seed, alpha=alpha)
    found = [meta[(a, b)] for a, b in zip(table["a"], table["b"])]
    table.insert(0, "source", [f[1] for f in found])
    table.insert(0, "model", [f[0] for f in found])
    table["flagged"] = table["verdict"] == "supported"
    return table


@dataclass
class SourceHoldout:
    """The source hold-out of 2A (see `source_holdout`)."""

    runs: pd.DataFrame  # `heldout_scores` of every run trained without a source (descriptive, per fold)
    arms: pd.DataFrame  # `holdout_arms`: the fold ensembles compared
    comparison: pd.DataFrame  # `holdout_comparison`: held-out vs in-source AUC per (model, source)
    skipped: dict[str, str]  # source -> why it could not be held out
    models: tuple[str, ...]
    sources: tuple[str, ...]


def source_holdout(dataset: Any, baseline: Condition, baseline_predictions: pd.DataFrame, sources: Sequence[str],
                   models: Sequence[str], n_folds: int = 5, test_ratio: float = 0.1, val_ratio: float = 0.1,
                   seed: int = 42, model_kwargs: dict[str, Any] | None = None, runs_dir: str | Path = RUNS_DIR,
                   cache_dir: str | Path = CACHE_DIR, progress: bool = True, n_boot: int = N_BOOT) -> SourceHoldout:
    """For each source: a split table that holds it out, ``models`` trained on it with the baseline's recipe and
    configuration, and `HOLDOUT_RULE` against the baseline runs' test predictions (``baseline_predictions``).
    A source that cannot be held out is skipped and printed; none held out at all is an error."""
    from lib.data.splits import SplitError, make_splits
    from lib.training.runstore import CVJob, collect_predictions, run_cv_many

    scores, predictions, skipped = [], {}, {}
    for source in tqdm(sources, desc="source hold-out", disable=not progress):
        try:
            splits = make_splits(dataset.manifest, n_folds=n_folds, test_ratio=test_ratio, val_ratio=val_ratio,
                                 seed=seed, holdout_sources=(source,))
        except SplitError as err:  # e.g. a source whose images are whole groups: too few groups remain for the test split
            skipped[source] = str(err)
            continue
        jobs = [CVJob(baseline.recipe, name, baseline.train, model_kwargs) for name in models]
        cv = pd.concat(run_cv_many(dataset, splits, jobs, runs_dir=runs_dir, progress=False, cache_dir=cache_dir),
                       ignore_index=True)
        predictions[source] = collect_predictions(cv, runs_dir=runs_dir)
        scores.append(heldout_scores(predictions[source], source))
    if not scores:
        raise ValueError(f"no source could be held out: {skipped}")
    for source, reason in skipped.items():
        print(f"{source}: not held out ({reason})")
    arms = holdout_arms(baseline_predictions[baseline_predictions["model"].isin(models)], predictions)
    comparison = holdout_comparison(arms, n_boot=n_boot, seed=seed)
    return SourceHoldout(pd.concat(scores, ignore_index=True), arms, comparison, skipped, tuple(models), tuple(sources))


# ------------------------------------------------------------------------------------------ augmentation
AUGMENT_RULE = (
    "Study-plan interpretation of augmentation, per model (augmented vs not augmented): 'over-regularisation' when the "
    "AUC on the training images (each image scored by the mean of the fold models that trained on it) AND the "
    "out-of-fold validation AUC both decrease (claim 'augmented < plain' supported: Holm-stepped group-bootstrap "
    "interval entirely below 0; one family per set over the notebook's augmentation pairs); 'shortcuts removed' when "
    "the train/val gap AND the per-source test AUC variance both decrease (per-run quantities the group bootstrap does "
    "not score: the secondary fold view, Nadeau-Bengio corrected 95 % interval entirely below 0); otherwise "
    "'inconclusive'."
)
AUGMENT_METRICS = ("gap", "source_auc_var", "train_auc", "val_auc")
AUGMENT_PAIRS = (("augment", BASELINE), ("augment_face_crop", "face_crop"))


def augmentation_pairs(trained: Iterable[str]) -> list[tuple[str, str]]:
    """The (augmented, plain) pairs of `AUGMENT_PAIRS` whose two conditions were trained."""
    trained = set(trained)
    return [(a, b) for a, b in AUGMENT_PAIRS if a in trained and b in trained]


def _training_part_as_holdout(predictions: pd.DataFrame) -> pd.DataFrame:
    """The validation rows, and the fold models' scores of their own training images relabelled "holdout", so that
    `compare_family`'s "holdout" set is the training-image fold ensemble (each image's mean over the k - 1 models that
    trained on it)."""
    part = predictions[predictions["split"].isin(["train", "val"])]
    return part.assign(split=part["split"].replace({"train": "holdout"}))


def augmentation_tests(predictions: pd.DataFrame, runs: pd.DataFrame, pairs: Sequence[tuple[str, str]],
                       by: str = "condition", n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Long table, one row per (model, pair, metric of `AUGMENT_METRICS`): the change augmented - plain with its
    interval and the verdict of the claim 'it decreases'. train_auc / val_auc: `compare_levels` on the training-image
    and out-of-fold sets (group bootstrap, Holm); gap / source_auc_var: `compare.fold_tests` on the per-run table
    ``runs`` (Nadeau-Bengio, the fold view). Columns: model, a, b, metric, set, diff, ci_low, ci_high, level, p, p_holm,
    verdict, real_groups, fake_groups, method, note."""
    auc = compare_levels(_training_part_as_holdout(predictions), by, pairs, sets=("holdout", SELECTION_SET),
                         direction="less", n_boot=n_boot, seed=seed)
    auc = auc.assign(metric=auc["set"].map({"holdout": "train_auc", SELECTION_SET: "val_auc"}),
                     set=auc["set"].replace({"holdout": "train"}), method="group bootstrap")
    rows = []
    for a, b in pairs:
        for model, part in runs[runs[by].isin([a, b])].groupby("model", sort=False):
            if part[by].nunique() < 2:
                continue
            for metric in ("gap", "source_auc_var"):
                res = compare.fold_tests(part, by, [(a, b)], metric=metric).iloc[0]
                rows.append({"model": model, "a": a, "b": b, "metric": metric, "set": "folds",
                             "diff": res["nb_mean_diff"], "ci_low": res["nb_ci_low"], "ci_high": res["nb_ci_high"],
                             "level": 0.95, "p": res["nb_p"], "p_holm": math.nan,
                             "verdict": verdict(res["nb_ci_low"], res["nb_ci_high"], "less"),
                             "method": f"Nadeau-Bengio over {int(res['n_folds'])} folds", "note": res["nb_note"]})
    columns = ["model", "a", "b", "metric", "set", "diff", "ci_low", "ci_high", "level", "p", "p_holm", "verdict",
               "real_groups", "fake_groups", "method", "note"]
    return pd.concat([auc.reindex(columns=columns), pd.DataFrame(rows, columns=columns)], ignore_index=True)


def interpret_augmentation(tests: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, pair) of `augmentation_tests`: the change of every metric of `AUGMENT_METRICS` with its
    interval and verdict (``<metric>_decrease``), and the interpretation of `AUGMENT_RULE`."""
    if tests.empty:
        raise ValueError("interpret_augmentation: no model ran an augmented condition and its plain counterpart")
    rows = []
    for (model, augmented, plain), group in tests.groupby(["model", "a", "b"], sort=False):
        res = group.set_index("metric")
        down = {m: m in res.index and res.loc[m, "verdict"] == "supported" for m in AUGMENT_METRICS}
        labels = []
        if down["gap"] and down["source_auc_var"]:
            labels.append("shortcuts removed")
        if down["train_auc"] and down["val_auc"]:
            labels.append("over-regularisation")
        row = {"model": model, "augmented": augmented, "plain": plain,
               "interpretation": " and ".join(labels) if labels else "inconclusive"}
        for m in AUGMENT_METRICS:
            found = m in res.index
            row[f"{m}_change"] = float(res.loc[m, "diff"]) if found else math.nan
            row[f"{m}_ci_low"] = float(res.loc[m, "ci_low"]) if found else math.nan
            row[f"{m}_ci_high"] = float(res.loc[m, "ci_high"]) if found else math.nan
            row[f"{m}_decrease"] = res.loc[m, "verdict"] if found else "not computed"
        val = res.loc["val_auc"] if "val_auc" in res.index else None
        row["real_groups"] = int(val["real_groups"]) if val is not None and pd.notna(val["real_groups"]) else 0
        row["fake_groups"] = int(val["fake_groups"]) if val is not None and pd.notna(val["fake_groups"]) else 0
        folds = res.loc["gap", "method"] if "gap" in res.index else ""
        row["fold_method"] = folds
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ neutralisers
PLANTED_KEYS = {"geometry": "geometry_shortcut", "compression": "compression"}  # the embedded card's build switches


def neutraliser_tests(predictions: pd.DataFrame, baseline: str = BASELINE, sets: Sequence[str] = compare.SETS,
                      n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Every trained neutraliser of `SHORTCUTS` against the baseline, per model: the claim 'the neutraliser costs AUC'
    (neutraliser < baseline), `compare_levels` on oof and test (its own family: one pre-registered question)."""
    trained = set(predictions["condition"])
    pairs = [(s.condition, baseline) for s in SHORTCUTS.values() if s.condition in trained]
    return compare_levels(predictions, "condition", pairs, sets=sets, direction="less", n_boot=n_boot, seed=seed)


def neutraliser_table(probes: dict[str, dict[str, Any]], intervals: pd.DataFrame, tests: pd.DataFrame,
                      card: dict[str, Any] | None = None, baseline: str = BASELINE) -> pd.DataFrame:
    """Per shortcut of `SHORTCUTS` (and model, set): whether the train+validation probe flags it, what the embedded
    card planted, the baseline's AUC without its neutraliser and the neutraliser's AUC (group-bootstrap intervals), and
    the neutraliser - baseline difference with its Holm-stepped interval and the verdict of 'the neutraliser costs
    AUC'. A neutraliser this profile did not train gets one row saying so."""
    params = (card or {}).get("params", {}) if card else None
    iv = intervals.set_index(["condition", "model", "set"])
    rows = []
    for name, shortcut in SHORTCUTS.items():
        probe = probes.get(name, {})
        head = {"shortcut": name, "what": shortcut.what, "probe_auc": probe.get("auc_mean", math.nan),
                "probe_ci_low": probe.get("auc_ci_low", math.nan), "probe_ci_high": probe.get("auc_ci_high", math.nan),
                "probe_folds": probe.get("auc_n", math.nan), "flagged": bool(probe.get("flagged", False)),
                "planted": None if params is None else params.get(PLANTED_KEYS[name]),
                "card": "" if params is None else f"{PLANTED_KEYS[name]}={params.get(PLANTED_KEYS[name])}",
                "neutraliser": shortcut.condition}
        mine = tests[tests["a"] == shortcut.condition] if len(tests) else tests
        if mine.empty:
            rows.append(head | {"note": f"neutraliser {shortcut.condition!r} not trained in this profile"})
            continue
        for _, t in mine.iterrows():
            key_with, key_without = (shortcut.condition, t["model"], t["set"]), (baseline, t["model"], t["set"])
            with_, without = iv.loc[key_with], iv.loc[key_without]
            rows.append(head | {
                "model": t["model"], "set": t["set"], "auc_without": without["estimate"],
                "without_ci_low": without["ci_low"], "without_ci_high": without["ci_high"],
                "auc_with": with_["estimate"], "with_ci_low": with_["ci_low"], "with_ci_high": with_["ci_high"],
                "real_groups": t["real_groups"], "fake_groups": t["fake_groups"], "diff": t["diff"],
                "ci_low": t["ci_low"], "ci_high": t["ci_high"], "level": t["level"], "p_holm": t["p_holm"],
                "verdict": t["verdict"], "note": t["note"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- recommendation
RECOMMENDATION_RULE = (
    "Chosen on validation data only: the pooled out-of-fold validation predictions of the trained Phase 2 conditions "
    "(every train+validation group is validated once) and shortcut flags measured on the train+validation images; "
    "the test hold-out is never read. (1) Exclude a condition whose preprocessing leaves a shortcut detected in this "
    "notebook: the geometry cue (square resize or letterbox) when the geometry shortcut is detected; the original "
    "compression (no JPEG re-encoding) when the compression shortcut is detected; a face crop when the MTCNN "
    "detection rate differs between real and fake images by more than the tolerance. (2) When the baseline itself is "
    "shortcut-free, exclude a condition whose out-of-fold AUC is significantly below the baseline's for some model "
    "(claim 'condition > baseline' contradicted: Holm-stepped group-bootstrap interval entirely below 0). "
    "(3) Recommend the remaining condition with the highest mean out-of-fold AUC over the models that trained every "
    "candidate (ties: the earlier condition in the notebook's list). If none remains, recommend the baseline and say "
    "why (fallback)."
)


def carried_shortcuts(recipe: Recipe, geometry_detected: bool, face_rate_gap: float, face_rate_tolerance: float,
                      compression_detected: bool = False) -> list[str]:
    """Names of the detected shortcuts this recipe leaves in the input."""
    out = []
    if geometry_detected and carries_geometry_cue(recipe):
        out.append("geometry")
    if compression_detected and not recipe.jpeg_quality:
        out.append("compression")
    if recipe.mode == "face" and np.isfinite(face_rate_gap) and face_rate_gap > face_rate_tolerance:
        out.append("face detection rate")
    return out


def validation_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """The validation rows of a `score_conditions` table: what `recommend` may read."""
    return predictions[predictions["split"] == "val"].reset_index(drop=True)


def recommend(conditions: Sequence[Condition], predictions: pd.DataFrame, shortcuts: dict[str, list[str]],
              baseline: str = BASELINE, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Apply `RECOMMENDATION_RULE`.

    ``predictions``: VALIDATION predictions only (`validation_predictions`: columns condition, model, path, label,
    group, split == "val", probability); test rows or test_* columns raise (`require_validation`). The out-of-fold AUC
    of every (condition, model) and the comparisons with ``baseline`` are computed here, on the "oof" set.
    ``shortcuts``: condition name -> the detected shortcuts its recipe carries (`carried_shortcuts`).
    """
    require_validation(predictions, "recommend")
    by_name = {c.name: c for c in conditions}
    if baseline not in by_name:
        raise ValueError(f"recommend: the baseline condition {baseline!r} is not among the conditions")
    unknown = sorted(set(shortcuts) - set(by_name))
    if unknown:
        raise ValueError(f"recommend: shortcuts given for unknown condition(s) {unknown}")
    trained = [c.name for c in conditions if c.name in set(predictions["condition"])]
    if baseline not in trained:
        raise ValueError(f"recommend: no validation predictions of the baseline {baseline!r}")
    models_of = {name: set(predictions.loc[predictions["condition"] == name, "model"]) for name in trained}
    shared = set.intersection(*models_of.values())
    if not shared:
        raise ValueError("recommend: no model trained every condition; cannot compare their means")
    intervals = level_intervals(predictions, "condition", sets=(SELECTION_SET,), n_boot=n_boot, seed=seed)
    cmp = compare_levels(predictions, "condition", level_pairs(predictions, "condition", baseline, trained),
                         sets=(SELECTION_SET,), direction="greater", n_boot=n_boot, seed=seed)
    baseline_clean = not shortcuts.get(baseline)
    rows = []
    for name in trained:
        reasons = []
        if shortcuts.get(name):
            reasons.append("carries the " + " and ".join(shortcuts[name]) + " shortcut")
        worse = sorted(cmp.loc[(cmp["a"] == name) & (cmp["verdict"] == "contradicted"), "model"]) if len(cmp) else []
        if name != baseline and baseline_clean and worse:
            reasons.append("out-of-fold AUC significantly below the baseline for " + ", ".join(worse))
        part = intervals[(intervals["condition"] == name) & intervals["model"].isin(shared)]
        rows.append({"condition": name, "mean_oof_auc": float(part["estimate"].mean()),
                     "eligible": not reasons, "reason": "; ".join(reasons) or "eligible"})
    candidates = pd.DataFrame(rows)
    eligible = candidates[candidates["eligible"]]
    fallback = eligible.empty
    if fallback:
        chosen = baseline
    else:
        best = eligible["mean_oof_auc"].max()
        chosen = eligible.loc[eligible["mean_oof_auc"] == best, "condition"].iloc[0]  # ties: earlier condition
    cond = by_name[chosen]
    delta = cmp[cmp["a"] == chosen] if len(cmp) else cmp
    keep = ["estimate", "ci_low", "ci_high", "real_groups", "fake_groups", "real_images", "fake_images"]
    own = intervals[intervals["condition"] == chosen]
    return {
        "condition": chosen,
        "recipe": cond.recipe.to_dict(),
        "augment": None if cond.train.augment is None else cond.train.augment.to_dict(),
        "normalization": cond.train.normalization,
        "fallback": bool(fallback),
        "fallback_reason": "no condition passed the rule" if fallback else "",
        "selection_set": SELECTION_SET,
        "models_compared": sorted(shared),
        "mean_oof_auc": float(candidates.set_index("condition").loc[chosen, "mean_oof_auc"]),
        "oof_auc": {str(r["model"]): {k: r[k] for k in keep} for _, r in own.iterrows()},
        "delta_vs_baseline": {str(r["model"]): float(r["diff"]) for _, r in delta.iterrows()},
        "delta_vs_baseline_tests": delta.drop(columns=["a", "b", "metric"]).to_dict("records"),
        "candidates": candidates.to_dict("records"),
        "rule": RECOMMENDATION_RULE,
    }


def phase3_recommendation(conditions: Sequence[Condition], predictions: pd.DataFrame, detected: dict[str, bool],
                          face_rate_gap: float, face_rate_tolerance: float, face_min_confidence: float,
                          profile: str, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """`recommend` with the shortcuts each condition carries (`carried_shortcuts`; ``detected``: shortcut name ->
    flagged on the train+validation images), plus the MTCNN threshold Phase 3 needs to rebuild a face-crop recipe and
    the shortcut findings the rule used."""
    geometry, compression = bool(detected.get("geometry")), bool(detected.get("compression"))
    shortcuts = {c.name: carried_shortcuts(c.recipe, geometry, face_rate_gap, face_rate_tolerance, compression)
                 for c in conditions}
    recommendation = recommend(conditions, predictions, shortcuts, baseline=BASELINE, n_boot=n_boot, seed=seed)
    return recommendation | {"face_min_confidence": face_min_confidence, "geometry_shortcut": geometry,
                             "compression_shortcut": compression, "face_rate_gap": face_rate_gap, "profile": profile}


# ------------------------------------------------------------------------------------------ summary table
VIEW_KIND = "evaluation view"
HOLDOUT_KIND = "source hold-out"
VIEW_PREFIX = "baseline @ "  # how an evaluation view is named among the conditions of the summary
SUMMARY_COLUMNS = ["condition", "kind", "model", "set", "auc", "auc_ci_low", "auc_ci_high", "real_groups",
                   "fake_groups", "real_images", "fake_images", "reference", "claim", "delta", "delta_ci_low",
                   "delta_ci_high", "level", "p_holm", "verdict", "note", "gap_mean", "source_auc_var_mean"]


def summary_rows(intervals: pd.DataFrame, tests: pd.DataFrame, by: str = "condition", reference: str = BASELINE,
                 kind: str = "trained", runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (level of ``by``, model, set): the AUC with its group-bootstrap interval and group counts
    (`level_intervals`), the comparison with ``reference`` (`compare_levels`: difference, Holm-stepped interval at
    ``level``, Holm p, verdict) and, from the per-run table ``runs``, the fold means of the train/val gap and of the
    per-source AUC variance (descriptive)."""
    out = intervals.rename(columns={by: "condition", "estimate": "auc", "ci_low": "auc_ci_low",
                                    "ci_high": "auc_ci_high"}).assign(kind=kind, reference=reference)
    cmp_cols = ["condition", "model", "set", "claim", "delta", "delta_ci_low", "delta_ci_high", "level", "p_holm",
                "verdict"]
    cmp = tests.rename(columns={"a": "condition", "diff": "delta", "ci_low": "delta_ci_low",
                                "ci_high": "delta_ci_high"}).reindex(columns=cmp_cols)
    out = out.merge(cmp, on=["condition", "model", "set"], how="left")
    order = {key: {v: i for i, v in enumerate(dict.fromkeys(out[key]))} for key in ("condition", "model", "set")}
    rank = pd.DataFrame({key: out[key].map(o) for key, o in order.items()})
    out = out.loc[rank.sort_values(list(order), kind="stable").index].reset_index(drop=True)
    if runs is not None and len(runs):
        extra = [m for m in ("gap", "source_auc_var") if m in runs.columns]
        means = runs.groupby([by, "model"], sort=False)[extra].mean().add_suffix("_mean").reset_index()
        out = out.merge(means.rename(columns={by: "condition"}), on=["condition", "model"], how="left")
    return out.reindex(columns=SUMMARY_COLUMNS)


def holdout_summary_rows(comparison: pd.DataFrame) -> pd.DataFrame:
    """`holdout_comparison` rows in the layout of `summary_rows`: the held-out AUC (with its interval) against the
    in-source AUC on the same real test images as the reference (Δ = held-out - in-source, Holm-stepped interval)."""
    out = pd.DataFrame({
        "condition": "without " + comparison["source"], "kind": HOLDOUT_KIND, "model": comparison["model"],
        "set": comparison["set"], "auc": comparison["estimate_a"], "auc_ci_low": comparison["a_ci_low"],
        "auc_ci_high": comparison["a_ci_high"], "real_groups": comparison["real_groups"],
        "fake_groups": comparison["fake_groups"], "real_images": comparison["real_images"],
        "fake_images": comparison["fake_images"], "reference": "in-source AUC, same real test images",
        "claim": comparison["claim"], "delta": comparison["diff"], "delta_ci_low": comparison["ci_low"],
        "delta_ci_high": comparison["ci_high"], "level": comparison["level"], "p_holm": comparison["p_holm"],
        "verdict": comparison["verdict"], "note": comparison["note"]})
    return out.reindex(columns=SUMMARY_COLUMNS).assign(subphase="2A")


def phase2_summary(intervals: pd.DataFrame, comparisons: pd.DataFrame, conditions: Sequence[Condition],
                   geometry: GeometryAnalysis, holdout: SourceHoldout, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every Phase 2 result in `summary_rows` layout with its sub-phase: the trained conditions against the
    baseline, the evaluation views against the training view, the source hold-out."""
    trained = summary_rows(intervals, comparisons, by="condition", reference=BASELINE, runs=runs)
    trained = trained.merge(condition_table(conditions)[["condition", "subphase"]], on="condition")
    views = geometry.view_summary.assign(condition=VIEW_PREFIX + geometry.view_summary["condition"], subphase="2A")
    return pd.concat([trained, views, holdout_summary_rows(holdout.comparison)], ignore_index=True)


def paired_tests_table(families: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The notebook's paired comparisons, one family per entry (Holm within a family and set), with a ``family``
    column."""
    return pd.concat([table.assign(family=name) for name, table in families.items() if len(table)], ignore_index=True)


def headline_table(display_summary: pd.DataFrame) -> pd.DataFrame:
    """The index page's table: the formatted summary without the source hold-out (it has its own figure)."""
    return display_summary[display_summary["kind"] != HOLDOUT_KIND].drop(columns=["kind"])


def _fmt(v: float, digits: int = 3, sign: bool = False) -> str:
    return "" if pd.isna(v) else f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _interval(est: float, low: float, high: float, digits: int = 3, sign: bool = False) -> str:
    text = _fmt(est, digits, sign)
    return text if pd.isna(low) or not text else f"{text} [{_fmt(low, digits, sign)}, {_fmt(high, digits, sign)}]"


def format_summary(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Readable version of `summary_rows` tables: 'AUC [95 % CI]', groups, 'Δ [Holm-stepped CI]', p, verdict."""
    groups = [("" if pd.isna(r) else f"{int(r)} real / {int(f)} fake")
              for r, f in zip(summary["real_groups"], summary["fake_groups"])]
    out = pd.DataFrame({
        "condition": summary["condition"], "kind": summary["kind"], "model": summary["model"], "set": summary["set"],
        "AUC [95 % CI]": [_interval(e, lo, hi, digits) for e, lo, hi in
                          zip(summary["auc"], summary["auc_ci_low"], summary["auc_ci_high"])],
        "groups": groups, "reference": summary["reference"],
        "Δ [Holm-stepped CI]": [_interval(d, lo, hi, digits, sign=True) for d, lo, hi in
                                zip(summary["delta"], summary["delta_ci_low"], summary["delta_ci_high"])],
        "p (Holm)": ["" if pd.isna(p) else f"{p:.3g}" for p in summary["p_holm"]],
        "verdict": summary["verdict"].fillna(""),
    })
    for col, name, d in (("gap_mean", "train-val gap (fold mean)", digits),
                         ("source_auc_var_mean", "per-source AUC var (fold mean)", 4)):
        if col in summary and summary[col].notna().any():
            out[name] = [_fmt(v, d) for v in summary[col]]
    return out


# ------------------------------------------------------------------------------------------------ conclusions
_VIEW_CHANGE = {"supported": "drops (the models used what this view removes)",
                "contradicted": "rises (this view adds a class cue of its own, e.g. padding bars on real images only)"}
_SET_NAME = {"oof": "out-of-fold validation", "test": "test hold-out", "train": "training images"}


def _ci_text(row: dict | pd.Series) -> str:
    if pd.isna(row.get("ci_low")):
        note = str(row.get("note", "") or "")
        return note if note.startswith("interval undefined") else "interval undefined: " + note
    return (f"{row['level']:.1%} Holm-stepped CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}, "
            f"p Holm = {row['p_holm']:.3g}")


def _probe_text(probe: dict[str, Any]) -> str:
    return (f"AUC {probe['auc_mean']:.3f} (95 % CI {probe['auc_ci_low']:.3f}-{probe['auc_ci_high']:.3f} over "
            f"{int(probe.get('auc_n', 0))} group-aware folds; {compare.counts_text(probe)})")


def _geometry_lines(geometry: GeometryAnalysis) -> list[str]:
    g, square = geometry.decision, geometry.by_class.set_index("class")["square"]
    lines = [f"Geometry shortcut {'DETECTED' if g['detected'] else 'not detected'}: on the train+validation images a "
             f"classifier on width/height/aspect alone reaches {_probe_text(geometry.probe)}; real images are square "
             f"in {square['real']:.0%} of cases, fakes in {square['fake']:.0%}."]
    for _, row in geometry.view_tests.iterrows():
        if pd.isna(row.get("diff")):
            lines.append(f"Baseline checkpoints ({row['model']}) through `{row['a']}`, {_SET_NAME.get(row['set'], row['set'])}: "
                         f"not comparable ({row['note']}).")
            continue
        lines.append(f"Baseline checkpoints ({row['model']}) seen through `{row['a']}` instead of the training resize, "
                     f"{_SET_NAME.get(row['set'], row['set'])} AUC {row['estimate_b']:.3f} -> {row['estimate_a']:.3f}, "
                     f"Δ {row['diff']:+.3f} ({_ci_text(row)}; {compare.counts_text(row)}): the AUC "
                     + _VIEW_CHANGE.get(row["verdict"], "does not change significantly") + ".")
    lines.append(f"Models rely on the geometry (AUC drops under the geometry-neutral view on the "
                 f"{_SET_NAME[g['decision_set']]} predictions): "
                 + (", ".join(g["exploited_by"]) if g["exploited"] else "not shown for any model") + ".")
    return lines


def neutraliser_lines(table: pd.DataFrame) -> list[str]:
    lines = []
    for name, rows in table.groupby("shortcut", sort=False):
        first = rows.iloc[0]
        planted = f"; dataset card: {first['card']}" if first.get("card") else ""
        head = (f"{first['what'][0].upper() + first['what'][1:]}: metadata probe on the train+validation images "
                f"AUC {first['probe_auc']:.3f} (95 % CI {first['probe_ci_low']:.3f}-{first['probe_ci_high']:.3f}): "
                f"{'FLAGGED' if first['flagged'] else 'not flagged'}{planted}")
        if "model" not in rows or rows["model"].isna().all():
            lines.append(f"{head}; {first['note']}.")
            continue
        reading = ("what is left once the shortcut is removed" if first["flagged"] else
                   "what the neutraliser alone costs (the shortcut is not flagged here, so there is nothing to remove)")
        for model, part in rows.groupby("model", sort=False):
            parts = []
            for _, r in part.iterrows():
                auc_with = _interval(r["auc_with"], r["with_ci_low"], r["with_ci_high"])
                auc_without = _interval(r["auc_without"], r["without_ci_low"], r["without_ci_high"])
                diff = "not comparable" if pd.isna(r["diff"]) else f"Δ {r['diff']:+.3f} ({_ci_text(r)})"
                parts.append(f"{_SET_NAME.get(r['set'], r['set'])} AUC {auc_with} with `{r['neutraliser']}` vs "
                             f"{auc_without} without, {diff}; {compare.counts_text(r)} -> 'the neutraliser costs "
                             f"AUC': {r['verdict']}")
            lines.append(f"{head}. Neutraliser `{first['neutraliser']}` ({model}; measures {reading}): "
                         + "; ".join(parts) + ".")
    return lines


def _holdout_lines(holdout: SourceHoldout) -> list[str]:
    comparison = holdout.comparison
    lines = []
    for _, r in comparison.iterrows():
        if pd.isna(r.get("diff")):
            lines.append(f"Source hold-out {r['source']} ({r['model']}): not comparable ({r['note']}).")
            continue
        held = _interval(r["estimate_a"], r["a_ci_low"], r["a_ci_high"])
        ins = _interval(r["estimate_b"], r["b_ci_low"], r["b_ci_high"])
        lines.append(f"Source hold-out {r['source']} ({r['model']}): held-out AUC {held} vs in-source {ins} on the same "
                     f"{int(r['real_groups'])} real test photograph group(s), Δ {r['diff']:+.3f} ({_ci_text(r)}"
                     + ("" if pd.isna(r["ci_low"]) else f"; {int(r['fake_groups_a'])} / {int(r['fake_groups_b'])} "
                                                        f"fake groups held-out / in-source")
                     + f") -> claim 'held-out < in-source': {r['verdict']}"
                     + (" (FLAGGED: source-specific artefacts)" if r["flagged"] else "") + ".")
    flagged = comparison.loc[comparison["flagged"], "source"].tolist() if len(comparison) else []
    skipped = (f"; not held out: {', '.join(holdout.skipped)} (too few groups left for the split)"
               if holdout.skipped else "")
    lines.append(f"Source hold-out: {', '.join(flagged) + ' flagged' if flagged else 'no source flagged'} "
                 f"({len(comparison)} source x model pairs, one Holm family{skipped}).")
    return lines


def selection_face_rates(manifest: pd.DataFrame, splits: pd.DataFrame, boxes: np.ndarray) -> tuple[pd.DataFrame, dict[str, int]]:
    """`faces.detection_rates` on the train+validation images (what the face-rate rule of the recommendation reads)
    and the real/fake groups and images behind them (`compare.group_counts`)."""
    from lib.data import faces

    rows = selection_rows(splits)
    part = manifest.iloc[rows].reset_index(drop=True)
    found = pd.DataFrame({"found": np.isfinite(np.asarray(boxes, dtype=float)[rows, 0])})
    return faces.detection_rates(part, found), compare.group_counts(part)


def _face_rate_line(face_rates: pd.DataFrame, tolerance: float, counts: dict[str, int] | None = None) -> str:
    by_class, gap = class_face_rates(face_rates), face_rate_gap(face_rates)
    n = {"real": "", "fake": ""}
    if counts:
        n = {c: f" ({counts[f'{c}_images']} images, {counts[f'{c}_groups']} groups)" for c in ("real", "fake")}
    return (f"On the train+validation images MTCNN finds a face in {by_class['real']:.0%} of the real images{n['real']} "
            f"and {by_class['fake']:.0%} of the fake images{n['fake']} (gap {gap:.2f}; "
            f"{'above' if gap > tolerance else 'within'} the tolerance {tolerance}"
            + ("; the face crop itself tells the classes apart" if gap > tolerance else "") + ").")


def _augmentation_line(row: pd.Series) -> str:
    def change(metric: str, digits: int = 3) -> str:
        return _interval(row[f"{metric}_change"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], digits, sign=True)

    return (f"Augmentation {row['augmented']} vs {row['plain']} ({row['model']}): train AUC {change('train_auc')}, "
            f"out-of-fold AUC {change('val_auc')} (group bootstrap, Holm-stepped; {row['real_groups']} real / "
            f"{row['fake_groups']} fake groups); gap {change('gap')}, per-source variance {change('source_auc_var', 4)} "
            f"({row['fold_method']}) -> {row['interpretation']}.")


def _recommendation_lines(r: dict[str, Any], intervals: pd.DataFrame | None = None) -> list[str]:
    per_model = "; ".join(f"{m} {compare.interval_text(v)}" for m, v in r.get("oof_auc", {}).items())
    lines = [f"Recommended for Phase 3, chosen on the out-of-fold validation predictions: `{r['condition']}` (recipe "
             f"{r['recipe']['mode']} {r['recipe']['size']} px"
             + (f", JPEG q{r['recipe']['jpeg_quality']}" if r["recipe"].get("jpeg_quality") else "")
             + f", normalisation {r['normalization']}, augmentation {'on' if r['augment'] else 'off'}; mean "
             f"out-of-fold AUC {r['mean_oof_auc']:.3f} over {', '.join(r['models_compared'])}"
             + (f": {per_model}" if per_model else "") + ")"
             + (f"; fallback: {r['fallback_reason']}" if r["fallback"] else "") + "."]
    if intervals is not None and len(intervals):
        test = intervals[(intervals["condition"] == r["condition"]) & (intervals["set"] == "test")]
        if len(test):
            lines.append(f"`{r['condition']}` on the test hold-out (reported, never used for the choice): "
                         + "; ".join(f"{row['model']} AUC {compare.interval_text(row)}" for _, row in test.iterrows())
                         + ".")
    return lines


def conclusions(geometry: GeometryAnalysis, comparisons: pd.DataFrame, holdout: SourceHoldout,
                face_rates: pd.DataFrame, face_rate_tolerance: float, augmentation: pd.DataFrame,
                recommendation: dict[str, Any], condition_models: Sequence[str], sources_note: str = "",
                neutralisers: pd.DataFrame | None = None, intervals: pd.DataFrame | None = None,
                face_counts: dict[str, int] | None = None) -> list[str]:
    """The notebook's computed conclusions, one sentence per finding, in the order of its sections."""
    lines = [f"Source hold-out: {sources_note}"] if sources_note else []
    lines += _geometry_lines(geometry)
    if neutralisers is not None and len(neutralisers):
        lines += neutraliser_lines(neutralisers)
    lines += [f"[{row['model']}] " + compare.describe_family_row(row) for _, row in comparisons.iterrows()]
    lines += _holdout_lines(holdout)
    lines.append(_face_rate_line(face_rates, face_rate_tolerance, face_counts))
    lines += [_augmentation_line(row) for _, row in augmentation.iterrows()]
    lines += _recommendation_lines(recommendation, intervals)
    lines.append(f"Models trained per condition: {', '.join(condition_models)}; source hold-out: "
                 f"{', '.join(holdout.models)} on {', '.join(holdout.sources)}.")
    return lines


def conclusions_record(conclusions: list[str], geometry: GeometryAnalysis, recommendation: dict[str, Any],
                       seconds: float, probes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON record of the conclusions with the decisions later notebooks and tests read."""
    return {"conclusions": conclusions, "geometry_shortcut_detected": geometry.decision["detected"],
            "geometry_shortcut_exploited": geometry.decision["exploited"],
            "shortcuts_flagged": {name: bool(p["flagged"]) for name, p in (probes or {}).items()},
            "recommendation": recommendation["condition"], "selection_set": recommendation.get("selection_set"),
            "seconds": seconds}


# ------------------------------------------------------------------------------------------------ figures
def plot_fold_pairs(table: pd.DataFrame, levels: Sequence[str], by: str = "condition",
                    metrics: str | Sequence[str] = "test_auc", title: str = "", path: str | Path | None = None):
    """Each metric per fold for each level of ``by`` (x axis): one thin grey line per fold joining the paired values,
    the mean with its 95 % t-interval in red; one row of panels per metric, one column per model. The descriptive
    fold view (training noise); levels that were not run are left out, and None is returned when fewer than two ran."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    levels = [lv for lv in levels if lv in set(table[by])]
    if len(levels) < 2:  # a condition this profile skips: nothing to pair
        print(f"plot_fold_pairs: fewer than two of the levels were run ({levels}); no figure")
        return None
    data = table[table[by].isin(levels)]
    counts = data.groupby("model", sort=False)[by].nunique()
    models = [m for m, k in counts.items() if k >= min(2, len(levels))]  # a model seen in one level compares nothing
    if not models:
        raise ValueError(f"plot_fold_pairs: no model has rows for two of {list(levels)}")
    width = max(3.6, 1.1 * len(levels))
    fig, axes = plt.subplots(len(metrics), len(models), figsize=(width * len(models), 3.3 * len(metrics)), squeeze=False)
    for r, metric in enumerate(metrics):
        for c, model in enumerate(models):
            ax = axes[r, c]
            part = data[data["model"] == model]
            present = [lv for lv in levels if lv in set(part[by])]
            for _, fold in part.groupby("fold"):
                values = fold.set_index(by)[metric].reindex(present)
                ax.plot(range(len(present)), values.to_numpy(), color="0.6", lw=0.8, marker="o", ms=3)
            for i, lv in enumerate(present):
                s = summarize(part.loc[part[by] == lv, metric])
                err = [[s["mean"] - s["ci_low"]], [s["ci_high"] - s["mean"]]] if np.isfinite(s["ci_low"]) else None
                ax.errorbar(i, s["mean"], yerr=err, fmt="s", color="C3", capsize=4, ms=6)
            ax.set_xticks(range(len(present)), present, rotation=20, ha="right")
            ax.set_title(f"{model}: {metric}", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def plot_view_examples(manifest: pd.DataFrame, views: dict[str, Recipe], per_class: int = 3,
                       path: str | Path | None = None):
    """The first ``per_class`` real and fake images shown through every view: one row per view."""
    from lib.data.cache import build_cache
    from lib.report.plots import image_grid

    examples = np.concatenate([np.flatnonzero(manifest["label"].to_numpy() == label)[:per_class] for label in (0, 1)])
    grid, titles = [], []
    for name, recipe in views.items():
        images = build_cache(manifest, recipe, progress=False)
        grid += [images[i].transpose(1, 2, 0) for i in examples]
        titles += [f"{name} | {manifest.at[i, 'source']}" for i in examples]
    return image_grid(grid, titles, ncols=len(examples), size=1.8, path=path)


def plot_face_rates(rates: pd.DataFrame, path: str | Path | None = None):
    """MTCNN face detection rate per source, real and fake side by side (`faces.detection_rates`)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from lib.report.plots import save

    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(rates, x="source", y="rate", hue="class", ax=ax)
    ax.set_title("MTCNN face detection rate per source")
    return save(fig, path)




def plot_deltas(summary: pd.DataFrame, title: str = "", path: str | Path | None = None):
    """Forest plot of the paired differences (``delta`` with its Holm-stepped interval) of a `summary_rows` table,
    one row per (condition, model, set)."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    rows = summary.dropna(subset=["delta"]).reset_index(drop=True)
    if rows.empty:
        raise ValueError("plot_deltas: no difference to plot")
    labels = [f"{c} | {m} ({s})" for c, m, s in zip(rows["condition"], rows["model"], rows["set"])]
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    low = (rows["delta"] - rows["delta_ci_low"]).to_numpy(dtype=float)
    high = (rows["delta_ci_high"] - rows["delta"]).to_numpy(dtype=float)
    colours = rows["verdict"].map({"supported": "C2", "contradicted": "C3"}).fillna("0.4")
    for yi, d, lo, hi, col in zip(y, rows["delta"], low, high, colours):
        ax.errorbar(d, yi, xerr=None if np.isnan(lo) else [[lo], [hi]], fmt="o", color=col, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("AUC difference vs reference (Holm-stepped group-bootstrap interval)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def plot_summary_deltas(summary: pd.DataFrame, title: str = "Phase 2: paired AUC differences (oof and test)",
                        path: str | Path | None = None):
    """`plot_deltas` of a `phase2_summary` table: the trained conditions and the evaluation views (labelled
    'view <name>'); the source hold-out has its own figure (`plot_holdout`)."""
    rows = summary[summary["kind"] != HOLDOUT_KIND]
    views = rows["kind"] == VIEW_KIND
    labels = rows["condition"].where(~views, "view " + rows["condition"].str.removeprefix(VIEW_PREFIX))
    return plot_deltas(rows.assign(condition=labels), title=title, path=path)


def plot_holdout(comparison: pd.DataFrame, path: str | Path | None = None):
    """Held-out vs in-source AUC per fake source on the same real test images (group-bootstrap 95 % intervals), one
    panel per model."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    models = list(dict.fromkeys(comparison["model"]))
    if not models:
        raise ValueError("plot_holdout: empty comparison")
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes.flat, models):
        part = comparison[comparison["model"] == model].reset_index(drop=True)
        x = np.arange(len(part))
        for offset, side, name, colour in ((-0.12, "b", "in-source AUC", "C0"), (0.12, "a", "held-out AUC", "C3")):
            mean = part[f"estimate_{side}"].to_numpy(dtype=float)
            err = np.vstack([mean - part[f"{side}_ci_low"].to_numpy(dtype=float),
                             part[f"{side}_ci_high"].to_numpy(dtype=float) - mean])
            ax.errorbar(x + offset, mean, yerr=np.where(np.isfinite(err), err, 0), fmt="o", color=colour, capsize=3,
                        label=name)
        ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
        ax.set_xticks(x, part["source"], rotation=20, ha="right")
        ax.set_title(model)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)
