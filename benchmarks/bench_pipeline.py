"""Benchmark: one training epoch of resnet18, three ways, on the same images, size and model initialisation.

(a) ours: the cached-tensor pipeline (cache already built, as in a warm study): BatchLoader over the memmap.
(b) the usual torchvision loop: ImageFolder + PIL transforms (Resize, ToTensor, Normalize) + DataLoader
    (num_workers=2, shuffle).
(c) the compute bound: the same number of steps on normalised tensors already in memory.

All three run the same training step (forward, BCEWithLogits loss, backward, AdamW step) from the same
initial weights, so the differences are the input pipeline. Prints the times and the ratios
ImageFolder/ours and ours/compute.

Then the executors: the same small grid of runs (--grid-folds folds of --model, one epoch each) trained by the
`local` executor (one run after another) and by the `processes` executor (--grid-workers worker processes, pool
start-up included), in the same session, with the ratio; the runs must come out identical (they are compared).

    python benchmarks/bench_pipeline.py                 # the embedded dataset (built on first use)
    python benchmarks/bench_pipeline.py --synthetic 512 # a synthetic folder of PNGs instead
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from lib.data.cache import IMAGENET_MEAN, IMAGENET_STD, BatchLoader, build_cache
from lib.fileio import sha256_file
from lib.data.recipes import Recipe


def synthetic_manifest(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """PNGs shaped like the embedded dataset: real 64x85 (rectangular), fake 64x64."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = i % 2
        h, w = (64, 64) if label else (64, 85)
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)  # smooth, photo-like content
        path = folder / f"img{i:05d}.png"
        img.save(path)
        rows.append({"path": path.as_posix(), "label": label, "source": "synthetic_fake" if label else "real",
                     "group": f"g{i}", "sha256": sha256_file(path)})
    return pd.DataFrame(rows)


def load_manifest(args: argparse.Namespace, scratch: Path) -> tuple[pd.DataFrame, str]:
    if args.synthetic:
        return synthetic_manifest(scratch / "synthetic", args.synthetic), f"synthetic ({args.synthetic} PNGs)"
    try:
        from lib.data.dataset import load_dataset
    except ImportError as exc:
        print(f"lib.data unavailable ({exc}); using 512 synthetic PNGs")
        return synthetic_manifest(scratch / "synthetic", 512), "synthetic (512 PNGs)"
    dataset = load_dataset(args.data_root, progress=True)
    return dataset.manifest, f"{dataset.name} ({len(dataset.manifest)} images)"


def image_folder_view(manifest: pd.DataFrame, folder: Path) -> Path:
    """The same files as an ImageFolder tree (symlinks): 0_real/ and 1_fake/."""
    for i, (path, label) in enumerate(zip(manifest["path"], manifest["label"])):
        target = folder / ("1_fake" if label == 1 else "0_real") / f"{i:06d}{Path(path).suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, target)
    return folder


def train_epoch(model: nn.Module, batches, max_steps: int) -> tuple[float, int]:
    """Same step for every pipeline; returns (seconds, steps)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    steps = 0
    start = time.perf_counter()
    for x, y in batches:
        loss = loss_fn(model(x)[:, 0], y.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if steps >= max_steps:
            break
    return time.perf_counter() - start, steps


def executor_benchmark(args: argparse.Namespace, scratch: Path) -> dict:
    """Seconds of the same grid of runs on the local and the processes executor, and their ratio."""
    from types import SimpleNamespace

    from lib.data.splits import make_splits
    from lib.executors import LocalExecutor, ProcessExecutor
    from lib.training.fit import TrainConfig
    from lib.training.runstore import CVJob, run_cv_many

    manifest, _ = load_manifest(args, scratch)
    dataset = SimpleNamespace(manifest=manifest, fingerprint=f"bench-{len(manifest)}")
    splits = make_splits(manifest, n_folds=args.grid_folds, test_ratio=0.2, seed=0, cache_dir=scratch / "splits")
    job = CVJob(Recipe(size=args.size), args.model, TrainConfig(epochs=1, batch_size=args.batch_size, seed=0))
    build_cache(manifest, job.recipe, cache_dir=scratch / "cache", progress=False)  # both start warm
    seconds, tables = {}, {}
    pool = ProcessExecutor(args.grid_workers)
    try:
        for name, executor in (("local", LocalExecutor()), ("processes", pool)):
            start = time.perf_counter()
            tables[name] = run_cv_many(dataset, splits, [job], runs_dir=scratch / name, cache_dir=scratch / "cache",
                                       executor=executor, progress=False)[0]
            seconds[name] = time.perf_counter() - start
    finally:
        pool.shutdown()
    same = tables["local"].drop(columns="seconds").equals(tables["processes"].drop(columns="seconds"))
    ratio = seconds["local"] / seconds["processes"]
    print(f"executors: {args.grid_folds} runs of {args.model} (1 epoch, {args.size}px), pool start-up included")
    print(f"  local (one after another):          {seconds['local']:7.2f} s")
    print(f"  processes ({args.grid_workers} workers):              {seconds['processes']:7.2f} s")
    print(f"  local / processes  = {ratio:.2f}x   identical runs: {same}")
    return {"runs": args.grid_folds, "workers": args.grid_workers, "local_seconds": round(seconds["local"], 2),
            "processes_seconds": round(seconds["processes"], 2), "local_over_processes": round(ratio, 3),
            "identical": bool(same)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="", help="dataset folder; empty = the embedded dataset")
    parser.add_argument("--synthetic", type=int, default=0, help="use N synthetic PNGs instead of a dataset")
    parser.add_argument("--size", type=int, default=32, help="input side (32 = the default profile)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="32 = the study plan")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the ImageFolder loop")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best time is kept")
    parser.add_argument("--grid-folds", type=int, default=4, help="runs in the executor comparison (0 = skip it)")
    parser.add_argument("--grid-workers", type=int, default=os.cpu_count() or 2, help="processes executor workers")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args()

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        scratch = Path(tmp)
        manifest, data_name = load_manifest(args, scratch)
        n = len(manifest)
        recipe = Recipe(size=args.size)
        cache_dir = scratch / "cache"

        t0 = time.perf_counter()
        images = build_cache(manifest, recipe, cache_dir=cache_dir, progress=False)
        cache_seconds = time.perf_counter() - t0
        labels = manifest["label"].to_numpy()

        from lib.models import create_model

        initial = create_model(args.model, num_classes=1)
        steps_per_epoch = n // args.batch_size  # all pipelines drop the last partial batch
        if steps_per_epoch < 2:
            raise SystemExit(f"only {n} images: need at least {2 * args.batch_size} for a meaningful benchmark")
        max_steps = steps_per_epoch * args.epochs

        # Warm-up: one step, so lazy initialisation is not charged to whichever pipeline runs first.
        warm = copy.deepcopy(initial)
        train_epoch(warm, [(torch.randn(args.batch_size, 3, args.size, args.size),
                            torch.zeros(args.batch_size))], 1)

        loader = BatchLoader(images, labels, np.arange(n), batch_size=args.batch_size, shuffle=True, seed=0,
                             drop_last=True)  # the same loader the trainer uses

        folder = image_folder_view(manifest, scratch / "imagefolder")
        tf = transforms.Compose([transforms.Resize((args.size, args.size)), transforms.ToTensor(),
                                 transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        ds = datasets.ImageFolder(str(folder), transform=tf)
        dl = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True)

        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x_all = (torch.from_numpy(np.array(images)).float() / 255 - mean) / std
        y_all = torch.tensor(labels, dtype=torch.float32)
        in_memory = [(x_all[i : i + args.batch_size], y_all[i : i + args.batch_size])
                     for i in range(0, steps_per_epoch * args.batch_size, args.batch_size)]

        def run(batches) -> tuple[float, int]:
            model = copy.deepcopy(initial)  # same initial weights for every pipeline
            total, steps = 0.0, 0
            for _ in range(args.epochs):  # a fresh iterator per epoch (DataLoader workers restart, as usual)
                s, k = train_epoch(model, batches, max_steps)
                total, steps = total + s, steps + k
            return total, steps

        pipelines = {"ours": loader, "imagefolder": dl, "compute": in_memory}
        times: dict[str, list[float]] = {name: [] for name in pipelines}
        names = list(pipelines)
        for r in range(args.repeats):  # interleaved, order rotated, best of N: other processes add noise
            for name in names[r % 3:] + names[: r % 3]:
                seconds, steps = run(pipelines[name])
                times[name].append(seconds)
        ours, plain, compute = (min(times[k]) for k in ("ours", "imagefolder", "compute"))

    result = {
        "data": data_name, "model": args.model, "size": args.size, "batch_size": args.batch_size,
        "epochs": args.epochs, "steps": steps, "torch_threads": torch.get_num_threads(),
        "dataloader_workers": args.workers, "cache_build_seconds": round(cache_seconds, 2),
        "ours_seconds": round(ours, 2), "imagefolder_seconds": round(plain, 2), "compute_seconds": round(compute, 2),
        "imagefolder_over_ours": round(plain / ours, 3), "ours_over_compute": round(ours / compute, 3),
        "imagefolder_over_ours_cold": round(plain / (ours + cache_seconds), 3),
        "all_seconds": {k: [round(v, 2) for v in vs] for k, vs in times.items()}, "repeats": args.repeats,
    }
    print(f"data: {data_name}; {args.model} at {args.size}px, batch {args.batch_size}, {steps} steps, "
          f"{torch.get_num_threads()} torch threads, best of {args.repeats}")
    print(f"  cache build (once per recipe):      {cache_seconds:7.2f} s")
    print(f"  (a) ours, cached tensors (warm):    {ours:7.2f} s")
    print(f"  (b) ImageFolder + DataLoader({args.workers}):    {plain:7.2f} s")
    print(f"  (c) compute bound (in memory):      {compute:7.2f} s")
    print(f"  ImageFolder / ours = {plain / ours:.2f}x   (cold, cache build included: {plain / (ours + cache_seconds):.2f}x)")
    print(f"  ours / compute     = {ours / compute:.3f}x")
    if args.grid_folds:
        with tempfile.TemporaryDirectory(prefix="bench_executors_") as tmp:
            result["executors"] = executor_benchmark(args, Path(tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
