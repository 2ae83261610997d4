"""Model-agnostic training loop for one-logit binary detectors on the tensor cache.

``fit`` trains with the loss of ``make_loss(config)`` (BCE or focal, optional label smoothing), optionally on
Mixup/CutMix batches, validates each epoch (loss, AUC, accuracy), early-stops on validation AUC and restores the best
epoch. It knows nothing about specific models: a model may expose ``regularization_loss()`` (e.g. an
attention-entropy term), which is added to the loss, and ``head_parameters()`` or ``head_name`` (the qualified
name(s) of its freshly initialised head modules) for ``backbone_lr_scale``.
"""

from __future__ import annotations

import copy
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from lib.data.augment import AugmentPolicy
from lib.data.batch_mixing import BatchMixer
from lib.data.cache import IMAGENET_MEAN, IMAGENET_STD, BatchLoader, channel_stats
from lib.fileio import hide_later_defaults, reduce_by_fields
from lib.progress import tqdm
from lib.training.losses import LOSSES, make_loss

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "plateau", "onecycle", "none")
AMP_MODES = ("auto", "bf16", "fp16", "off")
NORMALIZATIONS = ("imagenet", "train", "train_real", "cifake")
CIFAKE_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)  # the CIFAKE paper's scaling: pixels to [-1, 1]
CIFAKE_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained (part of the run key).

    t_max: cosine period in epochs (0 = ``epochs``). patience: stop after this many epochs without
    a better validation AUC (0 = never stop early); the best epoch is restored either way.
    grad_clip: max gradient norm (0 = off). amp: mixed precision on CUDA; a no-op on CPU.
    threads: CPU threads of torch during the run. Float reductions depend on how work is split between threads, so
    the thread count is part of the run: with it fixed, a run gives the same numbers on every executor and machine.
    normalization: "imagenet" statistics, "train" (statistics of the training images), "train_real"
    (statistics of the REAL training images only, so the fakes cannot shift the input scaling) or "cifake"
    (mean = std = 0.5, the CIFAKE paper's: pixels to [-1, 1]).
    loss: "bce" or "focal" (torchvision's sigmoid_focal_loss with focal_gamma, and focal_alpha the weight of the
    fake class, < 0 = no weighting); label_smoothing eps moves targets to y * (1 - eps) + eps / 2 (lib.training.losses).
    mixup_alpha / cutmix_alpha: Beta parameter of Mixup / CutMix of training batches (0 = off); mix_prob: the chance a
    batch is mixed (one of the two at 0.5 each when both are on; lib.data.batch_mixing). Validation never mixes or
    smooths: val_loss is plain BCE on the hard labels, comparable across losses.
    backbone_lr_scale: the model's non-head parameters train at lr * scale, its head at lr (for a pretrained
    backbone under a fresh head); != 1 needs a model with ``head_parameters()`` or ``head_name``.

    Run keys: fields added after runs were stored (`_LATER_FIELDS`) are left out of ``fields()`` of an instance, hence
    of asdict and of run keys, while at their default (as AugmentPolicy does), so older configs keep their keys.
    """

    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    t_max: int = 0
    warmup_epochs: int = 0
    patience: int = 0
    grad_clip: float = 0.0
    accum_steps: int = 1
    amp: str = "auto"
    normalization: str = "imagenet"
    augment: AugmentPolicy | None = None
    seed: int = 42
    device: str = "auto"
    eval_batch_size: int = 256
    threads: int = 1
    loss: str = "bce"
    focal_gamma: float = 2.0
    focal_alpha: float = -1.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    backbone_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):  # from JSON/YAML
            object.__setattr__(self, "augment", AugmentPolicy(**self.augment))
        checks = {
            "optimizer": (self.optimizer, OPTIMIZERS),
            "scheduler": (self.scheduler, SCHEDULERS),
            "amp": (self.amp, AMP_MODES),
            "normalization": (self.normalization, NORMALIZATIONS),
            "loss": (self.loss, LOSSES),
        }
        for name, (value, valid) in checks.items():
            if value not in valid:
                raise ValueError(f"unknown TrainConfig.{name} {value!r}; valid: {', '.join(valid)}")
        for name in ("epochs", "batch_size", "accum_steps", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if self.focal_gamma < 0:
            raise ValueError(f"TrainConfig.focal_gamma must be >= 0, got {self.focal_gamma}")
        if self.focal_alpha > 1:
            raise ValueError(f"TrainConfig.focal_alpha must be <= 1 (< 0 = off), got {self.focal_alpha}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(f"TrainConfig.mixup_alpha/cutmix_alpha must be >= 0 (0 = off), got "
                             f"{self.mixup_alpha}, {self.cutmix_alpha}")
        if not 0.0 <= self.mix_prob <= 1.0:
            raise ValueError(f"TrainConfig.mix_prob must be a probability in [0, 1], got {self.mix_prob}")
        if self.backbone_lr_scale <= 0:
            raise ValueError(f"TrainConfig.backbone_lr_scale must be > 0, got {self.backbone_lr_scale}")
        hide_later_defaults(self, _LATER_FIELDS)  # fields added later stay out of older run keys

    __reduce__ = reduce_by_fields

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return cls(**d)


# fields added after runs were stored, with the default that leaves them out of keys
_LATER_FIELDS = {"loss": "bce", "focal_gamma": 2.0, "focal_alpha": -1.0, "label_smoothing": 0.0, "mixup_alpha": 0.0,
                 "cutmix_alpha": 0.0, "mix_prob": 1.0, "backbone_lr_scale": 1.0}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def select_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else Apple MPS, else CPU; anything else is taken literally."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None. Mixed precision only on CUDA: on CPU/MPS every mode means off."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def normalization_stats(config: TrainConfig, images: np.ndarray, train_idx: np.ndarray,
                        labels: np.ndarray | Sequence[int] | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) used to normalise inputs, in [0, 1] pixel units.

    ``labels`` (aligned with ``images``) is needed only by ``normalization="train_real"``.
    """
    if config.normalization == "train":
        return channel_stats(images, train_idx)
    if config.normalization == "cifake":
        return CIFAKE_MEAN, CIFAKE_STD
    if config.normalization == "train_real":
        if labels is None:
            raise ValueError('normalization="train_real" needs the labels to find the real training images')
        train_idx = np.asarray(train_idx, dtype=np.int64)
        real = train_idx[np.asarray(labels)[train_idx] == 0]
        if real.size == 0:
            raise ValueError('normalization="train_real": the training part has no real image')
        return channel_stats(images, real)
    return IMAGENET_MEAN, IMAGENET_STD


def _head_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the head's parameters: from ``head_parameters()``, else the module(s) named by ``head_name`` (a name or
    a tuple of names)."""
    if callable(getattr(model, "head_parameters", None)):
        return {id(p) for p in model.head_parameters()}
    names = getattr(model, "head_name", None)
    names = (names,) if isinstance(names, str) else names
    if isinstance(names, (tuple, list)) and names:
        return {id(p) for name in names for p in model.get_submodule(name).parameters()}
    raise ValueError(f"backbone_lr_scale != 1 needs to know the model's head, but {type(model).__name__} has neither "
                     "head_parameters() nor head_name; leave backbone_lr_scale at 1 for it")


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[torch.nn.Parameter] | list[dict[str, Any]]:
    """The trainable parameters; with backbone_lr_scale != 1, two groups: the head at lr first (the history's lr
    column follows it), then the rest at lr * scale."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if cfg.backbone_lr_scale == 1.0:
        return params
    head_ids = _head_parameter_ids(model)
    head = [p for p in params if id(p) in head_ids]
    body = [p for p in params if id(p) not in head_ids]
    if not head:
        raise ValueError(f"backbone_lr_scale: the head of {type(model).__name__} has no trainable parameter")
    return [{"params": head, "lr": cfg.lr}] + ([{"params": body, "lr": cfg.lr * cfg.backbone_lr_scale}] if body else [])


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = _param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


def _make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler, step_unit): "step" schedulers advance per optimizer step, "epoch" per epoch."""
    sched = torch.optim.lr_scheduler
    if cfg.scheduler == "none":
        return None, None
    if cfg.scheduler == "plateau":
        return sched.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=max(1, cfg.patience // 2)), "epoch"
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":
        pct = cfg.warmup_epochs / cfg.epochs if cfg.warmup_epochs else 0.3
        max_lr = [group["lr"] for group in opt.param_groups]  # per group: keeps backbone_lr_scale
        return sched.OneCycleLR(opt, max_lr=max_lr, total_steps=total, pct_start=pct), "step"
    warm = cfg.warmup_epochs * steps_per_epoch
    period = (cfg.t_max or cfg.epochs) * steps_per_epoch - warm
    cosine = sched.CosineAnnealingLR(opt, T_max=max(1, period))
    if warm == 0:
        return cosine, "step"
    linear = sched.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=warm)
    return sched.SequentialLR(opt, [linear, cosine], milestones=[warm]), "step"


def _forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if out.ndim == 2 and out.shape[1] == 1:
        return out[:, 0]
    if out.ndim == 1:
        return out
    raise ValueError(f"the model must return (N, 1) logits for binary training, got shape {tuple(out.shape)}")


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    indices: np.ndarray | Sequence[int],
    batch_size: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: str | torch.device = "auto",
    amp: str = "off",
    progress: bool = False,
) -> np.ndarray:
    """Logits for ``images[indices]``, in the order of ``indices``. Never augments."""
    dev = select_device(device)
    model.to(dev).eval()
    loader = BatchLoader(images, None, indices, batch_size=batch_size, shuffle=False, mean=mean, std=std, device=dev)
    amp_dtype = resolve_amp(amp, dev)
    out = []
    for x, _ in tqdm(loader, desc="predict", leave=False, disable=not progress):
        with torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else nullcontext():
            out.append(_forward_logits(model, x).float().cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def predict(model: nn.Module, images: np.ndarray, indices: np.ndarray | Sequence[int], **kwargs: Any) -> np.ndarray:
    """Probabilities of "fake" (sigmoid of the logit) for ``images[indices]``; kwargs as ``predict_logits``."""
    from scipy.special import expit  # overflow-safe sigmoid

    return expit(predict_logits(model, images, indices, **kwargs))


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else float("nan")


def _check_parts(labels: np.ndarray, train_idx: np.ndarray) -> None:
    if train_idx.size == 0:
        raise ValueError("fit: the training part is empty")
    if len(np.unique(labels[train_idx])) < 2:
        raise ValueError("fit: the training part has a single class; a binary detector needs real and fake images")


def _train_epoch(model: nn.Module, loader: BatchLoader, opt: torch.optim.Optimizer, scheduler: Any, sched_unit: str,
                 scaler: torch.amp.GradScaler, loss_fn: Any, cfg: TrainConfig, device: torch.device,
                 amp_dtype: torch.dtype | None, epoch: int, progress: bool, mixer: BatchMixer | None = None) -> float:
    """One pass over the training batches (Mixup/CutMix, gradient accumulation, clipping, per-step schedules); the
    mean loss."""
    model.train()
    has_reg = callable(getattr(model, "regularization_loss", None))
    total, count = 0.0, 0
    opt.zero_grad(set_to_none=True)
    batches = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress)
    for i, (x, y) in enumerate(batches, start=1):
        if mixer is not None:
            x, y = mixer(x, y)  # soft labels from here on
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
            loss = loss_fn(_forward_logits(model, x).float(), y)
            if has_reg:
                loss = loss + model.regularization_loss()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}, batch {i}: lower the lr or check the data")
        scaler.scale(loss / cfg.accum_steps).backward()
        total += float(loss.detach()) * y.shape[0]
        count += y.shape[0]
        if i % cfg.accum_steps == 0 or i == len(loader):
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if sched_unit == "step":
                scheduler.step()
        batches.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def _validate(model: nn.Module, images: np.ndarray, labels: np.ndarray, val_idx: np.ndarray, cfg: TrainConfig,
              mean: Sequence[float], std: Sequence[float], device: torch.device, loss_fn: nn.Module) -> dict[str, float]:
    """Validation loss, AUC and accuracy at logit 0 on ``images[val_idx]``."""
    logits = predict_logits(model, images, val_idx, cfg.eval_batch_size, mean, std, device, cfg.amp)
    yv = labels[val_idx]
    return {"val_loss": float(loss_fn(torch.from_numpy(logits), torch.from_numpy(yv).double())),
            "val_auc": _auc(yv, logits), "val_accuracy": float(np.mean((logits > 0) == (yv > 0.5)))}


class _BestEpoch:
    """Keeps the best epoch's weights (a CPU copy) and counts epochs without improvement for early stopping."""

    def __init__(self) -> None:
        self.score, self.state, self.epoch, self.since = -math.inf, None, 0, 0

    def update(self, model: nn.Module, epoch: int, score: float) -> bool:
        if score <= self.score:
            self.since += 1
            return False
        self.score, self.epoch, self.since = score, epoch, 0
        self.state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return True

    def restore(self, model: nn.Module, last_epoch: int) -> None:
        if self.state is not None and self.epoch != last_epoch:
            model.load_state_dict(self.state)


def fit(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray | Sequence[int],
    train_idx: np.ndarray | Sequence[int],
    val_idx: np.ndarray | Sequence[int] | None = None,
    config: TrainConfig = TrainConfig(),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``model`` on ``images[train_idx]``; return it restored to its best epoch, and the history.

    The best epoch is the one with the highest validation AUC (lowest validation loss when the
    validation part has one class only); without ``val_idx`` the last epoch is kept. ``mean``/``std``
    default to ``normalization_stats(config, images, train_idx)``; pass the same values to ``predict``.
    History columns: epoch, train_loss, val_loss, val_auc, val_accuracy, lr, seconds, best.
    """
    cfg = config
    labels = np.asarray(labels, dtype=np.float32)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = None if val_idx is None or len(val_idx) == 0 else np.asarray(val_idx, dtype=np.int64)
    _check_parts(labels, train_idx)
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    if mean is None or std is None:
        mean, std = normalization_stats(cfg, images, train_idx, labels)
    model.to(device)
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    train_loader = BatchLoader(
        images, labels, train_idx, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
        augment=cfg.augment, mean=mean, std=std, device=device,
        drop_last=train_idx.size > cfg.batch_size,  # avoid a size-1 last batch (BatchNorm) when we can
    )
    opt = _make_optimizer(model, cfg)
    scheduler, sched_unit = _make_scheduler(opt, cfg, max(1, math.ceil(len(train_loader) / cfg.accum_steps)))
    loss_fn = make_loss(cfg)
    val_loss_fn = nn.BCEWithLogitsLoss()  # plain BCE on hard labels: comparable across losses and smoothing
    mixer = BatchMixer(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.mix_prob, seed=cfg.seed)
    mixer = mixer if mixer.active else None

    rows: list[dict[str, Any]] = []
    best = _BestEpoch()
    epochs_bar = tqdm(range(1, cfg.epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in epochs_bar:
        start = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "val_loss": math.nan,
                               "val_auc": math.nan, "val_accuracy": math.nan}
        row["train_loss"] = _train_epoch(model, train_loader, opt, scheduler, sched_unit, scaler, loss_fn, cfg, device,
                                         amp_dtype, epoch, progress, mixer)
        score = float(epoch)  # no validation: the last epoch is the best we know
        if val_idx is not None:
            row |= _validate(model, images, labels, val_idx, cfg, mean, std, device, val_loss_fn)
            score = row["val_auc"] if not math.isnan(row["val_auc"]) else -row["val_loss"]
            if sched_unit == "epoch":
                scheduler.step(score)
        row["seconds"] = time.perf_counter() - start
        row["best"] = best.update(model, epoch, score)
        rows.append(row)
        epochs_bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_auc=f"{row['val_auc']:.3f}")
        if cfg.patience > 0 and best.since >= cfg.patience:
            break
    epochs_bar.close()

    best.restore(model, rows[-1]["epoch"])
    model.eval()
    columns = ["epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds", "best"]
    history = pd.DataFrame(rows)[columns]
    history["best"] = history["epoch"] == best.epoch  # the restored epoch, not every improvement
    return model, history
