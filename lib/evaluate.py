"""Score a saved detector on any folder of images: `python -m lib.evaluate` (or `fakedet` once `pip install -e .`).

    python -m lib.evaluate --run 833a4854695c984a --data-root /data/newer_generators --out reports/eval/newer
    python -m lib.evaluate --run reports/runs/833a4854695c984a --data-root /data/coco_val --layout real_only --out ...
    python -m lib.evaluate --run NPR.pth --model npr --size 256 --data-root /data/ForenSynths/test --out ...

The folder is read like a training dataset (any layout, `lib.data.layouts`; bad files are skipped and listed), but
one class is enough: a real-only folder gives the false-positive rate, a fake-only folder the detection rate. The
out folder receives predictions.parquet (one row per image), metrics.json and metrics.csv (AUC, AP, EER, accuracy at
the run's validation threshold and at 0.5, rates, each with a group-bootstrap interval and its group counts),
per_generator.csv, per_source.csv, per_content.csv (sub-folder names, e.g. content classes), skipped.csv, and
report.md / report.html.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from lib.data.dataset import load_dataset
from lib.data.layouts import content_classes
from lib.data.recipes import MODES
from lib.evaluation.compare import N_BOOT, group_counts
from lib.evaluation.transfer import folder_metrics, per_generator, per_level
from lib.fileio import write_json, write_table
from lib.paths import CACHE_DIR, RUNS_DIR
from lib.report.scorecard import write_scorecard
from lib.training.scoring import Detector, load_detector, score_dataset


def evaluate_folder(detector: Detector, data_root: str | Path, out: str | Path, layout: str = "auto",
                    group_regex: str = "", n_boot: int = N_BOOT, progress: bool = True, device: str = "auto",
                    cache_dir: str | Path = CACHE_DIR) -> dict:
    """Score `detector` on the folder and write the out folder's files (module docstring); returns metrics.json's
    content."""
    out = Path(out)
    dataset = load_dataset(str(data_root), layout, group_regex=group_regex, progress=progress, allow_one_class=True)
    predictions, skipped = score_dataset(detector, dataset, cache_dir=cache_dir, progress=progress, device=device)
    predictions["content"] = content_classes(predictions["path"], dataset.root)
    main_threshold = detector.thresholds.get("validation", 0.5)
    metrics = folder_metrics(predictions, detector.thresholds, n_boot)
    generators = per_generator(predictions, main_threshold, n_boot)   # empty for a real-only folder
    sources = per_level(predictions, "source", main_threshold, n_boot)
    contents = per_level(predictions, "content", main_threshold, n_boot)
    record = {
        "detector": {"name": detector.name, "origin": detector.origin, "run_key": detector.run_key,
                     "recipe": detector.recipe.to_dict(), "thresholds": detector.thresholds},
        "data": {"root": str(dataset.root), "layout": dataset.layout, "images": int(len(predictions)),
                 **group_counts(predictions), "skipped": int(len(skipped))},
        "metrics": metrics.to_dict("records"), "per_generator": generators.to_dict("records"),
        "per_source": sources.to_dict("records"), "per_content": contents.to_dict("records"),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "predictions.parquet", predictions)
    write_json(out / "metrics.json", record)
    write_table(out / "metrics.csv", metrics)
    for name, table in (("per_generator", generators), ("per_source", sources), ("per_content", contents),
                        ("skipped", skipped)):
        write_table(out / f"{name}.csv", table)
    data = record["data"]
    facts = [f"detector: {detector.name}, from {detector.origin}",
             f"preprocessing: {detector.recipe.to_dict()}",
             f"decision thresholds: " + ", ".join(f"{k} = {v:.3f}" for k, v in detector.thresholds.items())
             + ("" if detector.threshold is not None else " (a bare checkpoint has no validation threshold)"),
             f"data: {data['root']} read as {data['layout']}: {data['real_images']} real images in "
             f"{data['real_groups']} groups, {data['fake_images']} fake images in {data['fake_groups']} groups; "
             f"{data['skipped']} file(s) skipped (skipped.csv)",
             "intervals: 95 % cluster bootstrap over groups; a row with fewer than 3 groups of a class has none"]
    tables = {"Metrics": metrics, "Per generator": generators, "Per source": sources}
    if contents["content"].nunique() > 1:
        tables["Per content class (sub-folder)"] = contents
    write_scorecard(out, f"Evaluation of {detector.name}", facts, tables)
    return record


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lib.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run key (reports/runs/<key>), run folder, or checkpoint file")
    p.add_argument("--data-root", required=True, help="folder of images in any supported layout")
    p.add_argument("--out", required=True, help="folder for predictions, metrics and the report")
    p.add_argument("--layout", default="auto", help="auto, embedded, deepfakeface, cifake, forensynths, generic, "
                                                    "real_only (every image is real), fake_only")
    p.add_argument("--group-regex", default="", help="group rule overriding the layout's (lib.data.layouts)")
    p.add_argument("--runs-dir", default=str(RUNS_DIR), help="run store holding the run keys")
    p.add_argument("--model", default="", help="architecture of a checkpoint file (registry name, e.g. npr)")
    p.add_argument("--size", type=int, default=0, help="checkpoint only: input size (default: the model's)")
    p.add_argument("--mode", default="", choices=("",) + MODES,
                   help="checkpoint only: preprocessing mode (default: native_crop for NPR models, else resize)")
    p.add_argument("--cache-dir", default=str(CACHE_DIR), help="where decoded images are cached (rebuildable)")
    p.add_argument("--n-boot", type=int, default=N_BOOT, help="bootstrap replicates of each interval")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        detector = load_detector(args.run, args.runs_dir, model=args.model, size=args.size, mode=args.mode)
        record = evaluate_folder(detector, args.data_root, args.out, args.layout, args.group_regex, args.n_boot,
                                 progress=not args.no_progress, device=args.device, cache_dir=args.cache_dir)
    except (FileNotFoundError, ValueError) as exc:   # missing run, wrong checkpoint, empty or unreadable folder
        print(f"error: {exc}", file=sys.stderr)
        return 2
    headline = [m for m in record["metrics"] if m["metric"] in ("auc", "false_positive_rate", "detection_rate")]
    for m in headline:
        where = f" at {m['threshold_name']} threshold" if m["threshold_name"] else ""
        print(f"{m['metric']}{where}: {m['estimate']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
    print(f"wrote {Path(args.out) / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
