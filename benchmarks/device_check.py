#!/usr/bin/env python
"""CUDA check of the artefact family (notebook 11) and the trainer, for a machine with a GPU.

    python benchmarks/device_check.py [--epochs 3] [--out DIR]

1. Every front-end's map is the same on the GPU as on the CPU (float32; max abs difference printed).
2. Every artefact model and `npr` trains through `lib.training.fit` on CUDA with mixed precision (`amp="auto"`: bf16
   where supported, else fp16 with a gradient scaler) and with `amp="off"`: finite losses, validation AUC, seconds.
   The data are synthetic (fakes carry nearest-neighbour 2x2 up-sampling), so the numbers only say the path works.
3. Inference images/s of each model on CPU and GPU.
Prints a table and writes `device_check.csv` to --out (default: the current folder). Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.models import create_model
from lib.models.artefacts import ARTEFACT_MODELS, FRONT_ENDS
from lib.training.fit import TrainConfig, fit, predict, resolve_amp


def synthetic(n: int = 512, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    labels = np.arange(n) % 2
    fakes = images[labels == 1]
    images[labels == 1] = fakes[:, :, ::2, ::2].repeat(2, axis=2).repeat(2, axis=3)
    return images, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, auto AMP dtype: "
          f"{resolve_amp('auto', torch.device('cuda'))}")
    failed = []

    x = torch.rand(4, 3, 40, 36)
    for name, front_end in FRONT_ENDS.items():
        diff = float((front_end(x.cuda()).cpu() - front_end(x)).abs().max())
        print(f"front-end {name:13s} max |GPU - CPU| = {diff:.2e}")
        if not diff < 1e-4:
            failed.append(f"front-end {name} differs on the GPU by {diff}")

    images, labels = synthetic()
    train, val = np.arange(0, 384), np.arange(384, 512)
    rows = []
    for model_name in ["npr", *ARTEFACT_MODELS]:
        for amp in ("auto", "off"):
            cfg = TrainConfig(epochs=args.epochs, batch_size=64, lr=1e-3, seed=0, device="cuda", amp=amp)
            model = create_model(model_name)
            start = time.perf_counter()
            model, history = fit(model, images, labels, train, val, cfg, progress=False)
            seconds = time.perf_counter() - start
            ok = bool(np.isfinite(history["train_loss"]).all())
            if not ok:
                failed.append(f"{model_name} amp={amp}: non-finite training loss")
            rows.append({"model": model_name, "amp": amp, "train_loss": float(history["train_loss"].iloc[-1]),
                         "val_auc": float(history["val_auc"].max()), "train_seconds": round(seconds, 2),
                         "finite": ok})
        speeds = {}
        for device in ("cpu", "cuda"):
            net = model.to(device).eval()
            batch = torch.rand(256, 3, 32, 32, device=device)
            with torch.inference_mode():
                net(batch)
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(5):
                    net(batch)
                if device == "cuda":
                    torch.cuda.synchronize()
            speeds[device] = 5 * 256 / (time.perf_counter() - start)
        for row in rows[-2:]:
            row.update(cpu_images_per_s=round(speeds["cpu"]), gpu_images_per_s=round(speeds["cuda"]))
        probabilities = predict(model.to("cuda"), images, val, mean=[0.5] * 3, std=[0.5] * 3, device="cuda",
                                amp="auto")
        if not np.isfinite(probabilities).all():
            failed.append(f"{model_name}: non-finite probabilities under AMP")
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    table.to_csv(Path(args.out) / "device_check.csv", index=False)
    for line in failed:
        print("FAILED:", line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
