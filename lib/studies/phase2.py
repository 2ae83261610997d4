"""Phase 2 of the study (notebook 04_phase2_preprocessing): preprocessing impact and shortcut analysis.

Vocabulary:
- a *condition* is one (recipe, training configuration) trained on the shared split table by some models
  (`Condition`, `run_conditions`); its runs come from `lib.training.runstore` and are loaded, not retrained, when another
  notebook already trained the same thing (the Phase 2 baseline is Phase 1's configuration);
- an *evaluation view* re-scores stored checkpoints on images preprocessed by another recipe, with each run's own
  normalisation and no augmentation (`evaluate_runs`);
- per run, `run_metrics` gives the AUC of every scored part, the train/val gap (train AUC - val AUC, both measured
  by the final model in evaluation mode) and the variance over fake sources of the per-source test AUC.

The computed rules of the notebook live here, so they are tested: the geometry-shortcut decision
(`geometry_shortcut`), the augmentation interpretation of the study plan (`interpret_augmentation`), the source
hold-out flag (`holdout_comparison`) and the recommendation for Phase 3 (`recommend`). The notebook's steps live here too
(`phase2_conditions`, `geometry_analysis`, `source_holdout`, `phase2_summary`), down to its computed `conclusions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.evaluation import compare
from lib.fileio import read_table, stable_hash, write_table
from lib.evaluation.metrics import binary_metrics, per_source_metrics
from lib.paths import CACHE_DIR, RUNS_DIR
from lib.data.augment import AugmentPolicy
from lib.data.recipes import Recipe
from lib.data.splits import part_indices
from lib.evaluation.stats import holm, summarize, summarize_table
from lib.training.fit import TrainConfig
from lib.studies.common import baseline_recipe, named_sources

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
_EVAL_VERSION = 1  # bump when evaluate_runs changes what it stores


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
                      augment: dict[str, Any]) -> list[Condition]:
    """The notebook's conditions: Phase 1's baseline (``config``, square resize, every model) and the conditions that
    change one thing of it (2E two), trained by ``condition_models``."""
    base = baseline_recipe(image_size)
    face = Recipe(size=image_size, mode="face", face_margin=face_margin, face_detector=f"mtcnn@{face_min_confidence}")
    augmented = replace(config, augment=AugmentPolicy(**augment))
    cm = tuple(condition_models)
    return [
        Condition(BASELINE, "2A", base, config, tuple(models), "Phase 1: square resize, ImageNet normalisation, no augmentation"),
        Condition("norm_real_train", "2A", base, replace(config, normalization="train_real"), cm,
                  "normalised with the statistics of the fold's real training images"),
        Condition("center_crop", "2A", Recipe(size=image_size, mode="center_crop"), config, cm,
                  "geometry-neutral training: largest centred square, the same scaling for every image"),
        Condition(f"resolution_{high_size}", "2B", Recipe(size=high_size), config, cm, f"square resize to {high_size} px"),
        Condition("face_crop", "2C", face, config, cm, "MTCNN face crop, centre crop when no face is found"),
        Condition("augment", "2D", base, augmented, cm, "training-time augmentation"),
        Condition("augment_face_crop", "2E", face, augmented, cm, "augmentation + face crop"),
    ]


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
    mean test AUC."""
    return cv.groupby(["condition", "model"], sort=False).agg(runs=("fold", "size"), trained_now=("trained", "sum"),
                                                               seconds=("seconds", "sum"), test_auc=("test_auc", "mean"))


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


def compare_conditions(table: pd.DataFrame, reference: str, metrics: Sequence[str] = ("test_auc",),
                       by: str = "condition", direction: str = "greater", within: str = "model",
                       levels: Sequence[str] | None = None) -> pd.DataFrame:
    """Every level of ``by`` against ``reference``, paired over folds within each ``within`` level (a model),
    for each metric; one Holm family over all rows. Verdicts come from the interval of the paired difference
    (level - reference) in the claimed ``direction``."""
    rows = []
    for group_level, group in table.groupby(within, sort=False):
        present = list(dict.fromkeys(group[by]))
        if reference not in present:
            continue
        for level in present if levels is None else [lv for lv in levels if lv in present]:
            if level == reference:
                continue
            for metric in metrics:
                res = compare.paired_comparison(group, by, level, reference, metric, direction)
                rows.append({within: group_level, **res})
    out = pd.DataFrame(rows)
    if len(out):
        out["t_p_holm"] = holm(out["t_p"].to_numpy())
        out["wilcoxon_p_holm"] = holm(out["wilcoxon_p"].to_numpy())
    return out


# ------------------------------------------------------------------------------------------------ geometry
def geometry_by_class(manifest: pd.DataFrame) -> pd.DataFrame:
    """Original geometry per class: images, share of square images, aspect ratio range and median."""
    frame = manifest.assign(aspect=manifest["width"] / manifest["height"],
                            cls=np.where(manifest["label"] == 1, "fake", "real"))
    out = frame.groupby("cls").agg(n=("aspect", "size"), square=("aspect", lambda a: float(np.mean(a == 1.0))),
                                   aspect_min=("aspect", "min"), aspect_median=("aspect", "median"),
                                   aspect_max=("aspect", "max"))
    return out.reindex(["real", "fake"]).rename_axis("class").reset_index()


def geometry_probe(manifest: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> dict[str, Any]:
    """`lib.studies.eda.shortcut_probe` restricted to the original geometry (width, height, aspect ratio): a group-aware
    cross-validated AUC of a classifier that sees nothing but the image's shape; ``flagged`` when its 95 %
    interval's lower bound exceeds 0.6."""
    from lib.studies.eda import shortcut_probe

    probe = shortcut_probe(manifest, n_folds=n_folds, seed=seed, features=GEOMETRY_FEATURES)
    return {k: v for k, v in probe.items() if k != "importance"}


GEOMETRY_RULE = (
    "Geometry shortcut detected = the original image geometry alone (width, height, aspect ratio) predicts the label: "
    "the group-aware cross-validated AUC of a classifier on these three numbers has a 95 % interval above 0.6. "
    "Exploited = detected AND showing the images through the geometry-neutral view (centre crop: both classes get the "
    "same isotropic scaling) lowers the baseline checkpoints' test AUC (paired 95 % interval over folds entirely below "
    "0) for at least one model."
)


def geometry_shortcut(probe: dict[str, Any], view_tests: pd.DataFrame, neutral_view: str = "center_crop",
                      metric: str = "test_auc") -> dict[str, Any]:
    """The computed geometry-shortcut decision (see `GEOMETRY_RULE`).

    ``probe``: a `geometry_probe` result (needs ``flagged``, ``auc_mean``, ``auc_ci_low``, ``auc_ci_high``).
    ``view_tests``: `compare_conditions(..., by="view", reference=<training view>, direction="less")` rows (columns
    model, a, metric, mean_diff, verdict).
    """
    for key in ("flagged", "auc_mean", "auc_ci_low", "auc_ci_high"):
        if key not in probe:
            raise KeyError(f"geometry_shortcut: the probe lacks {key!r}")
    present = bool(probe["flagged"])
    rows = view_tests[(view_tests["a"] == neutral_view) & (view_tests["metric"] == metric)] if len(view_tests) else view_tests
    if len(view_tests) and rows.empty:
        raise ValueError(f"geometry_shortcut: no comparison of the view {neutral_view!r} on {metric}")
    drops = {str(r["model"]): float(r["mean_diff"]) for _, r in rows.iterrows()}
    exploited_by = sorted(str(r["model"]) for _, r in rows.iterrows() if r["verdict"] == "supported")
    return {
        "detected": present,
        "exploited": present and bool(exploited_by),
        "exploited_by": exploited_by,
        "probe_auc_mean": float(probe["auc_mean"]),
        "probe_auc_ci": [float(probe["auc_ci_low"]), float(probe["auc_ci_high"])],
        "neutral_view": neutral_view,
        "neutral_view_auc_change": drops,
        "rule": GEOMETRY_RULE,
    }


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


@dataclass
class GeometryAnalysis:
    """What the 2A geometry question computes (see `geometry_analysis`)."""

    by_class: pd.DataFrame  # `geometry_by_class`
    probe: dict[str, Any]  # `geometry_probe`
    view_runs: pd.DataFrame  # `run_metrics` per (view, model)
    view_tests: pd.DataFrame  # every view against the training view, a drop is the claim
    view_summary: pd.DataFrame  # `summary_rows` of the views
    decision: dict[str, Any]  # `geometry_shortcut`

    def probe_table(self) -> pd.DataFrame:
        """The probe's result as one row, without the per-fold AUCs."""
        return pd.DataFrame([{k: v for k, v in self.probe.items() if k != "fold_auc"}])

    def record(self, dataset_card: dict[str, Any] | None) -> dict[str, Any]:
        """The JSON record: the decision, the probe, the per-class geometry and the embedded dataset's geometry switch."""
        card_switch = (dataset_card or {}).get("params", {}).get("geometry_shortcut")
        return self.decision | {"probe": self.probe, "by_class": self.by_class.to_dict("records"),
                                "card_geometry_shortcut": card_switch}


def geometry_analysis(manifest: pd.DataFrame, view_predictions: pd.DataFrame, n_folds: int = 5, seed: int = 42,
                      training_view: str = "resize", neutral_view: str = "center_crop") -> GeometryAnalysis:
    """Is the original geometry a shortcut, and do the baseline checkpoints use it? The geometry-only probe on
    ``manifest``, per-run metrics of ``view_predictions`` (`score_geometry_views`), each view against the training
    view (paired, direction "less") and the decision of `GEOMETRY_RULE`."""
    by_class = geometry_by_class(manifest)
    probe = geometry_probe(manifest, n_folds=n_folds, seed=seed)
    view_runs = run_metrics(view_predictions, by=("view", "model"))
    view_tests = compare_conditions(view_runs, training_view, metrics=["test_auc"], by="view", direction="less")
    decision = geometry_shortcut(probe, view_tests, neutral_view=neutral_view)
    view_summary = summary_rows(view_runs, view_tests, by="view", reference=training_view, kind=VIEW_KIND)
    return GeometryAnalysis(by_class, probe, view_runs, view_tests, view_summary, decision)


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


def in_source_scores(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per run (trained with every source) and fake source: the source's test fakes against every real test image."""
    rows = []
    for (model, fold, key), group in predictions[predictions["split"] == "test"].groupby(["model", "fold", "run_key"], sort=False):
        table = per_source_metrics(group)
        for _, r in table[table["label"] == 1].iterrows():
            rows.append({"model": model, "fold": fold, "run_key": key, "source": r["source"], "in_source_auc": r["auc"]})
    return pd.DataFrame(rows)


def holdout_comparison(heldout: pd.DataFrame, in_source: pd.DataFrame, threshold: float = 0.05) -> pd.DataFrame:
    """Per (model, source): held-out AUC (trained without the source) vs in-source AUC (trained with it, same
    source in the test part), both over folds. ``difference`` = in-source - held-out (mean); ``flagged`` when it
    exceeds ``threshold``. The two come from different training sets, so the interval and p of the difference are
    Welch's (unpaired); Holm over the rows."""
    from scipy import stats as sps

    rows = []
    for (model, source), held in heldout.groupby(["model", "source"], sort=False):
        ins = in_source[(in_source["model"] == model) & (in_source["source"] == source)]["in_source_auc"].dropna()
        h = held["heldout_auc"].dropna()
        sh, si = summarize(h), summarize(ins)
        row = {"model": model, "source": source, "n_heldout_images": int(held["n_heldout"].max()),
               "heldout_auc_mean": sh["mean"], "heldout_auc_ci_low": sh["ci_low"], "heldout_auc_ci_high": sh["ci_high"],
               "in_source_auc_mean": si["mean"], "in_source_auc_ci_low": si["ci_low"],
               "in_source_auc_ci_high": si["ci_high"], "difference": si["mean"] - sh["mean"],
               "diff_ci_low": math.nan, "diff_ci_high": math.nan, "welch_p": math.nan}
        if len(h) >= 2 and len(ins) >= 2 and (h.std() > 0 or ins.std() > 0):
            res = sps.ttest_ind(ins, h, equal_var=False)
            ci = res.confidence_interval(0.95)
            row.update(diff_ci_low=float(ci.low), diff_ci_high=float(ci.high), welch_p=float(res.pvalue))
        row["flagged"] = bool(np.isfinite(row["difference"]) and row["difference"] > threshold)
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out["welch_p_holm"] = holm(out["welch_p"].to_numpy())
    return out


@dataclass
class SourceHoldout:
    """The source hold-out of 2A (see `source_holdout`)."""

    runs: pd.DataFrame  # `heldout_scores` of every run trained without a source
    comparison: pd.DataFrame  # `holdout_comparison`: held-out vs in-source AUC per (model, source)
    skipped: dict[str, str]  # source -> why it could not be held out
    threshold: float
    models: tuple[str, ...]
    sources: tuple[str, ...]


def source_holdout(dataset: Any, baseline: Condition, baseline_predictions: pd.DataFrame, sources: Sequence[str],
                   models: Sequence[str], threshold: float = 0.05, n_folds: int = 5, test_ratio: float = 0.1,
                   val_ratio: float = 0.1, seed: int = 42, model_kwargs: dict[str, Any] | None = None,
                   runs_dir: str | Path = RUNS_DIR, cache_dir: str | Path = CACHE_DIR,
                   progress: bool = True) -> SourceHoldout:
    """For each source: a split table that holds it out, ``models`` trained on it with the baseline's recipe and
    configuration, its held-out AUC compared with its in-source AUC in the baseline runs (``baseline_predictions``).
    A source that cannot be held out is skipped and printed; none held out at all is an error."""
    from lib.data.splits import SplitError, make_splits
    from lib.training.runstore import CVJob, collect_predictions, run_cv_many

    heldout, skipped = [], {}
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
        heldout.append(heldout_scores(collect_predictions(cv, runs_dir=runs_dir), source))
    if not heldout:
        raise ValueError(f"no source could be held out: {skipped}")
    for source, reason in skipped.items():
        print(f"{source}: not held out ({reason})")
    runs = pd.concat(heldout, ignore_index=True)
    comparison = holdout_comparison(runs, in_source_scores(baseline_predictions), threshold=threshold)
    return SourceHoldout(runs, comparison, skipped, threshold, tuple(models), tuple(sources))


# ------------------------------------------------------------------------------------------ augmentation
AUGMENT_RULE = (
    "Study-plan interpretation of augmentation, per model, paired over folds (augmented - not augmented): "
    "'shortcuts removed' when the train/val gap AND the per-source AUC variance both decrease; 'over-regularisation' "
    "when the train AUC AND the validation AUC both decrease; a decrease counts only when the 95 % interval of the "
    "paired difference lies entirely below 0; otherwise 'inconclusive'."
)
AUGMENT_METRICS = ("gap", "source_auc_var", "train_auc", "val_auc")


def interpret_augmentation(table: pd.DataFrame, augmented: str, plain: str, by: str = "condition") -> pd.DataFrame:
    """One row per model: the paired change of gap, per-source AUC variance, train and val AUC (augmented - plain)
    with their verdicts (direction "less" = a decrease is supported) and the interpretation of `AUGMENT_RULE`."""
    subset = table[table[by].isin([augmented, plain])]
    tests = compare_conditions(subset, plain, metrics=AUGMENT_METRICS, by=by, direction="less", levels=[augmented])
    if tests.empty:
        raise ValueError(f"interpret_augmentation: no model ran both {augmented!r} and {plain!r}")
    rows = []
    for model, group in tests.groupby("model", sort=False):
        res = group.set_index("metric")
        down = {m: res.loc[m, "verdict"] == "supported" for m in AUGMENT_METRICS}
        labels = []
        if down["gap"] and down["source_auc_var"]:
            labels.append("shortcuts removed")
        if down["train_auc"] and down["val_auc"]:
            labels.append("over-regularisation")
        row = {"model": model, "augmented": augmented, "plain": plain,
               "interpretation": " and ".join(labels) if labels else "inconclusive"}
        for m in AUGMENT_METRICS:
            row[f"{m}_change"] = float(res.loc[m, "mean_diff"])
            row[f"{m}_ci_low"] = float(res.loc[m, "diff_ci_low"])
            row[f"{m}_ci_high"] = float(res.loc[m, "diff_ci_high"])
            row[f"{m}_decrease"] = res.loc[m, "verdict"]
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- recommendation
RECOMMENDATION_RULE = (
    "Candidates: the trained Phase 2 conditions on the shared split table. (1) Exclude a condition whose "
    "preprocessing leaves a shortcut detected in this notebook: the geometry cue (square resize or letterbox) when "
    "the geometry shortcut is detected; a face crop when the MTCNN detection rate differs between real and fake "
    "images by more than the tolerance. (2) When the baseline itself is shortcut-free, exclude a condition whose "
    "test AUC is significantly below the baseline's for some model (paired 95 % interval of the difference entirely "
    "below 0). (3) Recommend the remaining condition with the highest mean test AUC over the models that trained "
    "every candidate (ties: the earlier condition in the notebook's list). If none remains, recommend the baseline "
    "and say why (fallback)."
)


def carried_shortcuts(recipe: Recipe, geometry_detected: bool, face_rate_gap: float,
                      face_rate_tolerance: float) -> list[str]:
    """Names of the detected shortcuts this recipe leaves in the input."""
    out = []
    if geometry_detected and carries_geometry_cue(recipe):
        out.append("geometry")
    if recipe.mode == "face" and np.isfinite(face_rate_gap) and face_rate_gap > face_rate_tolerance:
        out.append("face detection rate")
    return out


def recommend(conditions: Sequence[Condition], table: pd.DataFrame, comparisons: pd.DataFrame,
              shortcuts: dict[str, list[str]], baseline: str = "baseline") -> dict[str, Any]:
    """Apply `RECOMMENDATION_RULE`.

    ``table``: per-run metrics (condition, model, fold, test_auc). ``comparisons``: test-AUC comparisons of each
    condition against ``baseline`` (`compare_conditions` rows: model, a, metric, mean_diff, verdict).
    ``shortcuts``: condition name -> the detected shortcuts its recipe carries (`carried_shortcuts`).
    """
    by_name = {c.name: c for c in conditions}
    if baseline not in by_name:
        raise ValueError(f"recommend: the baseline condition {baseline!r} is not among the conditions")
    unknown = sorted(set(shortcuts) - set(by_name))
    if unknown:
        raise ValueError(f"recommend: shortcuts given for unknown condition(s) {unknown}")
    trained = [c.name for c in conditions if c.name in set(table["condition"])]
    baseline_clean = not shortcuts.get(baseline)
    cmp = comparisons[comparisons["metric"] == "test_auc"] if len(comparisons) else comparisons
    models_of = {name: set(table.loc[table["condition"] == name, "model"]) for name in trained}
    shared = set.intersection(*models_of.values()) if models_of else set()
    if not shared:
        raise ValueError("recommend: no model trained every condition; cannot compare their means")
    rows = []
    for name in trained:
        reasons = []
        if shortcuts.get(name):
            reasons.append("carries the " + " and ".join(shortcuts[name]) + " shortcut")
        worse = sorted(cmp.loc[(cmp["a"] == name) & (cmp["verdict"] == "contradicted"), "model"]) if len(cmp) else []
        if name != baseline and baseline_clean and worse:
            reasons.append("test AUC significantly below the baseline for " + ", ".join(worse))
        part = table[(table["condition"] == name) & table["model"].isin(shared)]
        rows.append({"condition": name, "mean_test_auc": float(part["test_auc"].mean()),
                     "eligible": not reasons, "reason": "; ".join(reasons) or "eligible"})
    candidates = pd.DataFrame(rows)
    eligible = candidates[candidates["eligible"]]
    fallback = eligible.empty
    if fallback:
        chosen = baseline
    else:
        best = eligible["mean_test_auc"].max()
        chosen = eligible.loc[eligible["mean_test_auc"] == best, "condition"].iloc[0]  # ties: earlier condition
    cond = by_name[chosen]
    delta = cmp[(cmp["a"] == chosen)] if len(cmp) else cmp
    return {
        "condition": chosen,
        "recipe": cond.recipe.to_dict(),
        "augment": None if cond.train.augment is None else cond.train.augment.to_dict(),
        "normalization": cond.train.normalization,
        "fallback": bool(fallback),
        "fallback_reason": "no condition passed the rule" if fallback else "",
        "models_compared": sorted(shared),
        "mean_test_auc": float(candidates.set_index("condition").loc[chosen, "mean_test_auc"]),
        "delta_vs_baseline": {str(r["model"]): float(r["mean_diff"]) for _, r in delta.iterrows()},
        "candidates": candidates.to_dict("records"),
        "rule": RECOMMENDATION_RULE,
    }


def phase3_recommendation(conditions: Sequence[Condition], table: pd.DataFrame, comparisons: pd.DataFrame,
                          geometry_detected: bool, face_rate_gap: float, face_rate_tolerance: float,
                          face_min_confidence: float, profile: str) -> dict[str, Any]:
    """`recommend` with the shortcuts each condition carries (`carried_shortcuts`), plus the MTCNN threshold Phase 3
    needs to rebuild a face-crop recipe and the shortcut findings the rule used."""
    shortcuts = {c.name: carried_shortcuts(c.recipe, geometry_detected, face_rate_gap, face_rate_tolerance)
                 for c in conditions}
    recommendation = recommend(conditions, table, comparisons, shortcuts, baseline=BASELINE)
    return recommendation | {"face_min_confidence": face_min_confidence, "geometry_shortcut": geometry_detected,
                             "face_rate_gap": face_rate_gap, "profile": profile}


# ------------------------------------------------------------------------------------------ summary table
VIEW_KIND = "evaluation view"
HOLDOUT_KIND = "source hold-out"
VIEW_PREFIX = "baseline @ "  # how an evaluation view is named among the conditions of the summary
def summary_rows(table: pd.DataFrame, comparisons: pd.DataFrame, by: str = "condition", reference: str = "baseline",
                 kind: str = "trained", metric: str = "test_auc") -> pd.DataFrame:
    """One row per (level of ``by``, model): ``metric`` mean, std, 95 % interval over folds, the paired difference
    with ``reference`` (interval, Holm p, verdict), mean train/val gap and mean per-source AUC variance."""
    extra = [m for m in ("gap", "source_auc_var") if m in table.columns]
    summary = summarize_table(table, [by, "model"], [metric, *extra], sort=False)  # level order as in the table
    out = pd.DataFrame({
        "condition": summary[by], "kind": kind, "model": summary["model"], "metric": metric,
        "n": summary[f"{metric}_n"], "mean": summary[f"{metric}_mean"], "std": summary[f"{metric}_std"],
        "ci_low": summary[f"{metric}_ci_low"], "ci_high": summary[f"{metric}_ci_high"], "reference": reference,
    })
    for m in extra:
        out[f"{m}_mean"] = summary[f"{m}_mean"].to_numpy()
    cmp = comparisons[comparisons["metric"] == metric] if len(comparisons) else pd.DataFrame(
        columns=["model", "a", "mean_diff", "diff_ci_low", "diff_ci_high", "t_p_holm", "verdict"])
    cmp = cmp.rename(columns={"a": "condition", "mean_diff": "delta", "diff_ci_low": "delta_ci_low",
                              "diff_ci_high": "delta_ci_high", "t_p_holm": "p_holm"})
    cols = ["condition", "model", "delta", "delta_ci_low", "delta_ci_high", "p_holm", "verdict"]
    return out.merge(cmp[cols], on=["condition", "model"], how="left")


def holdout_summary_rows(comparison: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """`holdout_comparison` rows in the layout of `summary_rows`: the held-out AUC against the in-source AUC as the
    reference (Δ = held-out - in-source, Welch interval)."""
    return pd.DataFrame({
        "condition": "without " + comparison["source"], "kind": HOLDOUT_KIND, "model": comparison["model"],
        "metric": "held-out AUC", "n": np.nan, "mean": comparison["heldout_auc_mean"], "std": np.nan,
        "ci_low": comparison["heldout_auc_ci_low"], "ci_high": comparison["heldout_auc_ci_high"],
        "reference": "in-source AUC", "delta": -comparison["difference"], "delta_ci_low": -comparison["diff_ci_high"],
        "delta_ci_high": -comparison["diff_ci_low"], "p_holm": comparison["welch_p_holm"],
        "verdict": np.where(comparison["flagged"], f"flagged (> {threshold})", "not flagged"), "subphase": "2A"})


def phase2_summary(runs: pd.DataFrame, comparisons: pd.DataFrame, conditions: Sequence[Condition],
                   geometry: GeometryAnalysis, holdout: SourceHoldout) -> pd.DataFrame:
    """Every Phase 2 result in `summary_rows` layout with its sub-phase: the trained conditions against the
    baseline, the evaluation views against the training view, the source hold-out."""
    trained = summary_rows(runs, comparisons, by="condition", reference=BASELINE)
    trained = trained.merge(condition_table(conditions)[["condition", "subphase"]], on="condition")
    views = geometry.view_summary.assign(condition=VIEW_PREFIX + geometry.view_summary["condition"], subphase="2A")
    return pd.concat([trained, views, holdout_summary_rows(holdout.comparison, holdout.threshold)], ignore_index=True)


def paired_tests_table(comparisons: pd.DataFrame, view_tests: pd.DataFrame) -> pd.DataFrame:
    """The notebook's paired tests, one Holm family each: conditions vs the baseline, geometry views vs resize."""
    return pd.concat([comparisons.assign(family="conditions vs baseline"),
                      view_tests.assign(family="geometry views vs resize")], ignore_index=True)


def headline_table(display_summary: pd.DataFrame) -> pd.DataFrame:
    """The index page's table: the formatted summary without the source hold-out (it has its own figure)."""
    return display_summary[display_summary["kind"] != HOLDOUT_KIND].drop(columns=["kind"])


def format_summary(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Readable version of `summary_rows` tables: 'mean ± std' and '[low, high]' strings."""
    f = lambda v: "" if pd.isna(v) else f"{v:.{digits}f}"  # noqa: E731
    d = lambda v: "" if pd.isna(v) else f"{v:+.{digits}f}"  # noqa: E731
    out = pd.DataFrame({
        "condition": summary["condition"], "kind": summary["kind"], "model": summary["model"],
        "metric": summary["metric"], "n": summary["n"],
        "mean ± std": [f"{f(m)} ± {f(s)}" for m, s in zip(summary["mean"], summary["std"])],
        "95 % CI": [f"[{f(lo)}, {f(hi)}]" for lo, hi in zip(summary["ci_low"], summary["ci_high"])],
        "reference": summary["reference"],
        "Δ": [d(v) for v in summary["delta"]],
        "Δ 95 % CI": ["" if pd.isna(lo) else f"[{d(lo)}, {d(hi)}]" for lo, hi in zip(summary["delta_ci_low"], summary["delta_ci_high"])],
        "p (Holm)": ["" if pd.isna(p) else f"{p:.3g}" for p in summary["p_holm"]],
        "verdict": summary["verdict"].fillna(""),
    })
    for col, name in (("gap_mean", "train-val gap"), ("source_auc_var_mean", "per-source AUC var")):
        if col in summary:
            out[name] = [f(v) if name != "per-source AUC var" or pd.isna(v) else f"{v:.4f}" for v in summary[col]]
    return out


# ------------------------------------------------------------------------------------------------ conclusions
_VIEW_CHANGE = {"supported": "drops (the models used what this view removes)",
                "contradicted": "rises (this view adds a class cue of its own, e.g. padding bars on real images only)"}


def _geometry_lines(geometry: GeometryAnalysis) -> list[str]:
    g, square = geometry.decision, geometry.by_class.set_index("class")["square"]
    lines = [f"Geometry shortcut {'DETECTED' if g['detected'] else 'not detected'}: a classifier on width/height/aspect "
             f"alone reaches AUC {g['probe_auc_mean']:.3f} (95 % CI {g['probe_auc_ci'][0]:.3f}-{g['probe_auc_ci'][1]:.3f}); "
             f"real images are square in {square['real']:.0%} of cases, fakes in {square['fake']:.0%}."]
    for _, row in geometry.view_tests.iterrows():
        lines.append(f"Baseline checkpoints seen through `{row['a']}` instead of the training resize ({row['model']}): "
                     f"test AUC {row['mean_b']:.3f} -> {row['mean_a']:.3f}, Δ {row['mean_diff']:+.3f} (95 % CI "
                     f"{row['diff_ci_low']:+.3f} to {row['diff_ci_high']:+.3f}, Holm p = {row['t_p_holm']:.3g}): the AUC "
                     + _VIEW_CHANGE.get(row["verdict"], "does not change significantly") + ".")
    lines.append("Models rely on the geometry (AUC drops under the geometry-neutral view): "
                 + (", ".join(g["exploited_by"]) if g["exploited"] else "not shown for any model") + ".")
    return lines


def _holdout_line(holdout: SourceHoldout) -> str:
    comparison = holdout.comparison
    flagged = comparison[comparison["flagged"]]
    found = ("; ".join(f"{r['source']} ({r['model']}): held-out AUC {r['heldout_auc_mean']:.3f} vs in-source "
                       f"{r['in_source_auc_mean']:.3f}" for _, r in flagged.iterrows()) + " flagged"
             if len(flagged) else "no source flagged")
    skipped = (f"; not held out: {', '.join(holdout.skipped)} (too few groups left for the split)"
               if holdout.skipped else "")
    return (f"Source hold-out (threshold {holdout.threshold}): {found} ({len(comparison)} source x model pairs"
            f"{skipped}).")


def _face_rate_line(face_rates: pd.DataFrame, tolerance: float) -> str:
    by_class, gap = class_face_rates(face_rates), face_rate_gap(face_rates)
    return (f"MTCNN finds a face in {by_class['real']:.0%} of real and {by_class['fake']:.0%} of fake images (gap "
            f"{gap:.2f}; {'above' if gap > tolerance else 'within'} the tolerance {tolerance}).")


def _augmentation_line(row: pd.Series) -> str:
    return (f"Augmentation {row['augmented']} vs {row['plain']} ({row['model']}): gap {row['gap_change']:+.3f}, "
            f"per-source variance {row['source_auc_var_change']:+.4f}, train AUC {row['train_auc_change']:+.3f}, "
            f"val AUC {row['val_auc_change']:+.3f} -> {row['interpretation']}.")


def _recommendation_line(r: dict[str, Any]) -> str:
    return (f"Recommended for Phase 3: `{r['condition']}` (recipe {r['recipe']['mode']} {r['recipe']['size']} px, "
            f"normalisation {r['normalization']}, augmentation {'on' if r['augment'] else 'off'}; mean test AUC "
            f"{r['mean_test_auc']:.3f} over {', '.join(r['models_compared'])})"
            + (f"; fallback: {r['fallback_reason']}" if r["fallback"] else "") + ".")


def conclusions(geometry: GeometryAnalysis, comparisons: pd.DataFrame, holdout: SourceHoldout,
                face_rates: pd.DataFrame, face_rate_tolerance: float, augmentation: pd.DataFrame,
                recommendation: dict[str, Any], condition_models: Sequence[str], sources_note: str = "") -> list[str]:
    """The notebook's computed conclusions, one sentence per finding, in the order of its sections."""
    lines = [f"Source hold-out: {sources_note}"] if sources_note else []
    lines += _geometry_lines(geometry)
    lines += [f"[{row['model']}] " + compare.describe_comparison(row) for _, row in comparisons.iterrows()]
    lines.append(_holdout_line(holdout))
    lines.append(_face_rate_line(face_rates, face_rate_tolerance))
    lines += [_augmentation_line(row) for _, row in augmentation.iterrows()]
    lines.append(_recommendation_line(recommendation))
    lines.append(f"Models trained per condition: {', '.join(condition_models)}; source hold-out: "
                 f"{', '.join(holdout.models)} on {', '.join(holdout.sources)}.")
    return lines


def conclusions_record(conclusions: list[str], geometry: GeometryAnalysis, recommendation: dict[str, Any],
                       seconds: float) -> dict[str, Any]:
    """The JSON record of the conclusions with the decisions later notebooks and tests read."""
    return {"conclusions": conclusions, "geometry_shortcut_detected": geometry.decision["detected"],
            "geometry_shortcut_exploited": geometry.decision["exploited"],
            "recommendation": recommendation["condition"], "seconds": seconds}


# ------------------------------------------------------------------------------------------------ figures
def plot_fold_pairs(table: pd.DataFrame, levels: Sequence[str], by: str = "condition",
                    metrics: str | Sequence[str] = "test_auc", title: str = "", path: str | Path | None = None):
    """Each metric per fold for each level of ``by`` (x axis): one thin grey line per fold joining the paired values,
    the mean with its 95 % t-interval in red; one row of panels per metric, one column per model."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
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
    """Forest plot of the paired differences (``delta`` with its 95 % interval) of a `summary_rows` table."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    rows = summary.dropna(subset=["delta"]).reset_index(drop=True)
    if rows.empty:
        raise ValueError("plot_deltas: no difference to plot")
    labels = [f"{c} | {m} ({mt})" for c, m, mt in zip(rows["condition"], rows["model"], rows["metric"])]
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    low = (rows["delta"] - rows["delta_ci_low"]).to_numpy()
    high = (rows["delta_ci_high"] - rows["delta"]).to_numpy()
    colours = rows["verdict"].map({"supported": "C2", "contradicted": "C3"}).fillna("0.4")
    for yi, d, lo, hi, col in zip(y, rows["delta"], low, high, colours):
        ax.errorbar(d, yi, xerr=None if np.isnan(lo) else [[lo], [hi]], fmt="o", color=col, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("difference vs reference (95 % CI)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def plot_summary_deltas(summary: pd.DataFrame, title: str = "Phase 2: paired differences (test AUC)",
                        path: str | Path | None = None):
    """`plot_deltas` of a `phase2_summary` table: the trained conditions and the evaluation views (labelled
    'view <name>'); the source hold-out has its own figure (`plot_holdout`)."""
    rows = summary[summary["kind"] != HOLDOUT_KIND]
    views = rows["kind"] == VIEW_KIND
    labels = rows["condition"].where(~views, "view " + rows["condition"].str.removeprefix(VIEW_PREFIX))
    return plot_deltas(rows.assign(condition=labels), title=title, path=path)


def plot_holdout(comparison: pd.DataFrame, path: str | Path | None = None):
    """Held-out vs in-source AUC per fake source (means with 95 % intervals), one panel per model."""
    import matplotlib.pyplot as plt

    from lib.report.plots import save

    models = list(dict.fromkeys(comparison["model"]))
    if not models:
        raise ValueError("plot_holdout: empty comparison")
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes.flat, models):
        part = comparison[comparison["model"] == model].reset_index(drop=True)
        x = np.arange(len(part))
        for offset, name, colour in ((-0.12, "in_source", "C0"), (0.12, "heldout", "C3")):
            mean = part[f"{name}_auc_mean"].to_numpy()
            err = np.vstack([mean - part[f"{name}_auc_ci_low"], part[f"{name}_auc_ci_high"] - mean])
            ax.errorbar(x + offset, mean, yerr=np.where(np.isfinite(err), err, 0), fmt="o", color=colour, capsize=3,
                        label=name.replace("_", "-") + " AUC")
        ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
        ax.set_xticks(x, part["source"], rotation=20, ha="right")
        ax.set_title(model)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)
