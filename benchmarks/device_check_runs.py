#!/usr/bin/env python
"""The run store and the evaluate command on a GPU (benchmarks/device_check.py covers the models and the trainer):
training under each mixed-precision mode, inference, the evaluate command's scoring (clean and perturbed), and that
CPU and GPU agree on the same weights.

    python benchmarks/device_check_runs.py [--out DIR]

Builds a small synthetic dataset in a temporary folder (real: smooth noise; fake: the same kind of image up-sampled
2x with nearest neighbours, the artefact NPR looks for), trains `simple_cnn` and `npr` for a few epochs with
`amp` off, bf16 and fp16, and prints one JSON record (also written to DIR/gpu_check.json). Exits 1 when a check
fails, 2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _dataset(root: Path, n: int = 96, size: int = 48) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        real = rng.integers(0, 256, (size, size, 3)).astype(np.float32)
        real = (real + np.roll(real, 1, 0) + np.roll(real, 1, 1)) / 3   # smooth a little
        small = rng.integers(0, 256, (size // 2, size // 2, 3)).astype(np.uint8)
        fake = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.NEAREST))
        for label, pixels in (("real", real.astype(np.uint8)), ("fake", fake)):
            path = root / label / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)


def _worker_sees(_job: int) -> dict:
    """What a Ray task sees: the GPU Ray assigned to it."""
    import os

    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "cuda": torch.cuda.is_available()}


def ray_section(ds, splits, tmp: Path) -> dict:
    """The Ray executor on this machine: the GPU resource a local instance reports, what each task sees, and a run
    grid trained through `run_cv_many` on Ray against the same grid on the local executor."""
    try:
        import ray
    except ImportError:
        return {"skipped": "ray is not installed"}
    from lib.data.recipes import Recipe
    from lib.executors import LocalExecutor, RayExecutor
    from lib.training.fit import TrainConfig
    from lib.training.runstore import CVJob, run_cv_many

    executor = RayExecutor(workers=4)
    seen = executor.run(_worker_sees, list(range(4)), progress=False)
    from lib.executors import gpu_share

    out = {"cluster_resources": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
           "gpu_share_per_task": gpu_share(ray.cluster_resources()), "tasks_see": seen}
    jobs = [CVJob(Recipe(size=32), model, TrainConfig(epochs=3, batch_size=16, lr=1e-3, seed=0, patience=3))
            for model in ("simple_cnn", "resnet18")]
    for name, chosen in (("ray", executor), ("local", LocalExecutor())):
        start = time.perf_counter()
        tables = run_cv_many(ds, splits, jobs, runs_dir=tmp / f"runs_{name}", cache_dir=tmp / "cache",
                             progress=False, executor=chosen)
        out[f"{name}_seconds"] = round(time.perf_counter() - start, 2)
        out[f"{name}_test_auc"] = [round(float(v), 4) for t in tables for v in t["test_auc"]]
    executor.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="", help="folder for gpu_check.json")
    parser.add_argument("--ray", action="store_true", help="also the Ray executor on this machine's GPU")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2

    from lib.data.dataset import load_dataset
    from lib.data.recipes import Recipe
    from lib.data.splits import make_splits
    from lib.training.fit import TrainConfig, predict
    from lib.training.runstore import RunSpec, load_model, load_run, train_or_load
    from lib.training.scoring import load_detector, score_images

    record: dict = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "runs": [], "failures": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _dataset(tmp / "data")
        ds = load_dataset(str(tmp / "data"), "generic", progress=False)
        splits = make_splits(ds.manifest, n_folds=2, test_ratio=0.25, seed=0, cache_dir=None)
        test = ds.manifest[splits["split"] == "test"].reset_index(drop=True)
        for model, recipe in (("simple_cnn", Recipe(size=32)), ("npr", Recipe(size=32, mode="native_crop"))):
            for amp in ("off", "bf16", "fp16"):
                cfg = TrainConfig(epochs=4, batch_size=16, lr=1e-3, seed=0, patience=4, device="cuda", amp=amp)
                spec = RunSpec.for_fold(ds, splits, recipe, model, cfg, 0)
                start = time.perf_counter()
                run = train_or_load(spec, ds, splits, runs_dir=tmp / "runs", progress=False, cache_dir=tmp / "cache")
                seconds = time.perf_counter() - start
                run = load_run(run.run_dir)
                stored = run.predictions[run.predictions["split"] == "test"]
                # the same weights on the CPU, in full precision
                from lib.data.cache import build_cache
                images = build_cache(ds.manifest, recipe, cache_dir=tmp / "cache", progress=False)
                norm = run.metrics["normalization"]
                cpu = predict(load_model(run.run_dir), images, stored["row"].to_numpy(), mean=norm["mean"],
                              std=norm["std"], device="cpu")
                detector = load_detector(str(run.run_dir))
                on_gpu = score_images(detector, test, tmp / "cache", progress=False, device="cuda")
                on_cpu = score_images(detector, test, tmp / "cache", progress=False, device="cpu")
                jpeg = score_images(detector.perturbed("jpeg:50"), test, tmp / "cache", progress=False, device="cuda")
                row = {"model": model, "amp": amp, "seconds": round(seconds, 2),
                       "finite_losses": bool(np.isfinite(run.history["train_loss"]).all()),
                       "val_auc": round(float(run.metrics["val"]["auc"]), 4),
                       "test_auc": round(float(run.metrics["test"]["auc"]), 4),
                       "cpu_vs_saved_gpu_max_diff": float(np.abs(cpu - stored["probability"].to_numpy()).max()),
                       "scoring_gpu_vs_cpu_max_diff": float(np.abs(on_gpu["probability"] - on_cpu["probability"]).max()),
                       "jpeg50_changes_scores": bool(np.abs(jpeg["probability"] - on_gpu["probability"]).max() > 0)}
                record["runs"].append(row)
                # cuDNN convolutions use TF32 by default (about 1e-4 here); half precision rounds the logits
                tolerance = 1e-3 if amp == "off" else 5e-2
                if not row["finite_losses"] or row["cpu_vs_saved_gpu_max_diff"] > tolerance:
                    record["failures"].append(f"{model} amp={amp}: {row}")
        if args.ray:
            record["ray"] = ray_section(ds, splits, tmp)
            if "skipped" not in record["ray"] and not all(t["cuda"] for t in record["ray"]["tasks_see"]):
                record["failures"].append(f"a Ray task saw no GPU: {record['ray']['tasks_see']}")
        # inference speed of a torchvision backbone, fp32 against bf16 autocast
        from lib.models import create_model
        net = create_model("resnet18").cuda().eval()
        x = torch.randn(256, 3, 128, 128, device="cuda")
        for dtype in (None, torch.bfloat16):
            with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                for _ in range(3):
                    net(x)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(10):
                    net(x)
                torch.cuda.synchronize()
            record[f"resnet18_128px_images_per_s_{'bf16' if dtype else 'fp32'}"] = round(2560 / (time.perf_counter() - start))
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(text)
    return 1 if record["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
