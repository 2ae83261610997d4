"""A saved detector scored on any dataset: `load_detector` (a run of the run store, or a published checkpoint file),
`score_images` / `score_dataset` (per-image predictions in the run store's format).

A run brings everything it needs: architecture and kwargs (config.json), weights (model.safetensors), preprocessing
recipe, input normalisation and a decision threshold chosen on its own validation predictions. A checkpoint file
brings only weights: the caller names the architecture and the recipe; the normalisation is ImageNet's and the only
threshold is 0.5. Files are read safely: safetensors, or `torch.load(weights_only=True)`, never unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.data.cache import IMAGENET_MEAN, IMAGENET_STD, build_cache
from lib.data.recipes import Recipe
from lib.evaluation.compare import validation_thresholds
from lib.models import create_model, list_models
from lib.models.registry import model_info, read_state_dict
from lib.paths import CACHE_DIR, RUNS_DIR
from lib.training.fit import predict
from lib.training.inference import run_normalization
from lib.training.runstore import is_complete, load_run, torch_threads

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


class CheckpointMismatch(ValueError):
    """A checkpoint's tensors do not fit the architecture it is loaded into."""


@dataclass
class Detector:
    """A trained model with what scoring it needs."""

    name: str                       # e.g. "resnet18 (run 833a4854695c984a)" or "npr (NPR.pth)"
    model: nn.Module
    recipe: Recipe
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float | None         # chosen on the run's validation predictions; None for a bare checkpoint
    origin: str                     # the run folder or the checkpoint file
    run_key: str = ""
    batch_size: int = 128
    threads: int = 0                # the run's CPU thread count (0: leave torch's)

    @property
    def thresholds(self) -> dict[str, float]:
        """The named decision thresholds to report: the run's validation threshold (when it has one) and 0.5."""
        return ({"validation": self.threshold} if self.threshold is not None else {}) | {"0.5": 0.5}

    def perturbed(self, perturbation: str) -> "Detector":
        """The same detector reading images with a test-time perturbation (`lib.data.perturbations`) first."""
        return replace(self, recipe=replace(self.recipe, perturbation=perturbation))


def _run_folder(run: str, runs_dir: Path) -> Path | None:
    path = Path(run).expanduser()
    if path.is_dir():
        return path
    if "/" not in run and (runs_dir / run).is_dir():
        return runs_dir / run
    return None


def load_detector(run: str, runs_dir: str | Path = RUNS_DIR, model: str = "", size: int = 0,
                  mode: str = "") -> Detector:
    """The detector named by `run`: a run folder, a run key of `runs_dir`, or a checkpoint file. For a checkpoint,
    `model` names the registered architecture and `size` / `mode` the preprocessing (defaults: the model's input
    size; native pixels for the NPR family, a square resize otherwise); a run brings its own. Raises
    FileNotFoundError for a missing or incomplete run and CheckpointMismatch for weights that do not fit."""
    runs_dir = Path(runs_dir)
    folder = _run_folder(str(run), runs_dir)
    if folder is not None:
        if not is_complete(folder):
            raise FileNotFoundError(f"{folder} is not a complete run folder (config.json, model.safetensors, "
                                    f"predictions.parquet ... missing): was its training interrupted?")
        return _from_run(folder)
    path = Path(run).expanduser()
    if path.is_file():
        return _from_checkpoint(path, model, size, mode)
    raise FileNotFoundError(f"no run {run!r}: not a run folder, not a run key in {runs_dir} "
                            f"({_count_runs(runs_dir)} runs there) and not a checkpoint file. Run keys are in the "
                            f"run_key column of reports/<profile>/tables/*_folds.csv.")


def _count_runs(runs_dir: Path) -> int:
    return sum(1 for p in runs_dir.iterdir() if is_complete(p)) if runs_dir.is_dir() else 0


def _from_run(folder: Path) -> Detector:
    run = load_run(folder)
    mean, std = run_normalization(run)
    val = run.predictions[run.predictions["split"] == "val"].assign(model="run")
    threshold = float(validation_thresholds(val, "model")["run"]) if len(val) else None
    return Detector(name=f"{run.spec.model} (run {run.key})", model=run.get_model(), recipe=run.spec.recipe,
                    mean=mean, std=std, threshold=threshold, origin=str(folder),
                    run_key=run.key, batch_size=run.spec.train.eval_batch_size, threads=run.spec.train.threads)


def _npr_authors_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The NPR authors' `NPR.pth` (their ResNet: conv1, bn1, layer1, layer2, fc1) -> `NPRNet` (trunk.*, fc)."""
    if "fc1.weight" not in state:
        return state
    return {("fc" + k[3:] if k.startswith("fc1.") else f"trunk.{k}"): v for k, v in state.items()}


KEY_ADAPTERS = {"npr": _npr_authors_keys}


def _from_checkpoint(path: Path, model: str, size: int, mode: str) -> Detector:
    if not model:
        raise ValueError(f"{path} is a checkpoint file: name its architecture (--model NAME; one of "
                         f"{', '.join(list_models())})")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise CheckpointMismatch(f"{path}: not a checkpoint file (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")
    net = create_model(model, num_classes=1)
    try:
        state = read_state_dict(path)
    except ValueError as exc:
        raise CheckpointMismatch(str(exc)) from None
    state = KEY_ADAPTERS.get(model, lambda s: s)(state)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        own = net.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
                  if state[k].shape != own[k].shape]
        raise CheckpointMismatch(
            f"{path} does not fit architecture {model!r}: {len(missing)} missing key(s) {missing[:4]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:4]}, {len(shapes)} shape mismatch(es) {shapes[:3]}. "
            f"Is it a checkpoint of another model, or with another head (one logit expected)?") from exc
    info = model_info(model)
    recipe = Recipe(size=size or int(info["input_size"]),
                    mode=mode or ("native_crop" if info["family"] == "npr" else "resize"))
    return Detector(name=f"{model} ({path.name})", model=net.eval(), recipe=recipe, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, threshold=None, origin=str(path))


def too_small(manifest: pd.DataFrame, recipe: Recipe) -> np.ndarray:
    """Rows a native-pixel recipe cannot read: images smaller than its window (resampling would be needed)."""
    if recipe.mode != "native_crop":
        return np.zeros(len(manifest), dtype=bool)
    return ((manifest["width"] < recipe.size) | (manifest["height"] < recipe.size)).to_numpy()


def score_images(detector: Detector, manifest: pd.DataFrame, cache_dir: str | Path = CACHE_DIR,
                 progress: bool = True, device: str = "auto", columns: Sequence[str] = ()) -> pd.DataFrame:
    """Per-image predictions of `detector` on the rows of `manifest` (decoded once with its recipe into the tensor
    cache): row, path, label, source, group, the `columns` asked for, and probability. Rows in the order given."""
    if manifest.empty:
        raise ValueError("no image to score")
    images = build_cache(manifest.reset_index(drop=True), detector.recipe, cache_dir=cache_dir, progress=progress)
    threads = detector.threads or torch.get_num_threads()
    with torch_threads(threads):
        prob = predict(detector.model, images, np.arange(len(manifest)), batch_size=detector.batch_size,
                       mean=detector.mean, std=detector.std, device=device, progress=progress)
    keep = [c for c in ("path", "label", "source", "group", *columns) if c in manifest.columns]
    out = manifest[keep].reset_index(drop=True)
    out.insert(0, "row", np.arange(len(out), dtype=np.int64))
    out["probability"] = prob
    return out


def score_dataset(detector: Detector, dataset: Any, cache_dir: str | Path = CACHE_DIR, progress: bool = True,
                  device: str = "auto", columns: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, skipped) of `detector` on every usable image of `dataset` (`lib.data.dataset.Dataset`): the
    dataset's own skipped files plus the images its recipe cannot read, each with its reason."""
    manifest = dataset.manifest
    small = too_small(manifest, detector.recipe)
    skipped = pd.concat([dataset.skipped, pd.DataFrame({
        "path": manifest.loc[small, "path"],
        "reason": f"smaller than the detector's {detector.recipe.size}x{detector.recipe.size} native-pixel window"})],
        ignore_index=True)
    if small.all():
        raise ValueError(f"every image of {dataset.root} is smaller than the detector's {detector.recipe.size} px "
                         f"native-pixel window: nothing to score")
    return score_images(detector, manifest.loc[~small], cache_dir, progress, device, columns), skipped
