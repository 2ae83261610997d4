"""The evaluate command (`python -m lib.evaluate`): a saved run or a checkpoint file scored on any folder, two classes
or one, with clear errors for a missing run, a checkpoint that does not fit, and an empty folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lib.data.recipes import Recipe
from lib.evaluate import main
from lib.executors import LocalExecutor
from lib.models import create_model
from lib.training.fit import TrainConfig
from lib.training.runstore import run_cv


def _png(path: Path, fake: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = (rng.integers(0, 150, (16, 20, 3)) + (100 if fake else 0)).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _generic_folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        _png(root / "real" / f"r{i}.png", False, i)
        _png(root / "fake" / f"f{i}.png", True, 10 + i)
    return root


@pytest.fixture
def trained(study):
    """One simple_cnn run of the tiny study (fakes brighter), in the test's own run store."""
    cv = run_cv(study.dataset, study.splits, Recipe(size=16), "simple_cnn",
                TrainConfig(epochs=2, batch_size=8, lr=1e-3, seed=0, patience=2), folds=[0], runs_dir=study.runs,
                cache_dir=study.cache, progress=False, executor=LocalExecutor())
    return study, cv["run_key"].iloc[0]


def _run(study, run: str, root: Path, out: Path, *extra: str) -> int:
    return main(["--run", run, "--runs-dir", str(study.runs), "--data-root", str(root), "--out", str(out),
                 "--cache-dir", str(study.cache), "--n-boot", "200", "--no-progress", *extra])


def test_scores_a_saved_run_on_a_generic_real_fake_folder(trained, tmp_path, capsys):
    study, key = trained
    root = tmp_path / "generic"
    for i in range(6):
        _png(root / "real" / f"r{i}.png", False, 100 + i)
        _png(root / "fake" / "gen_x" / f"f{i}.png", True, 200 + i)
    out = tmp_path / "out"
    assert _run(study, key, root, out) == 0
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert len(predictions) == 12 and predictions["probability"].between(0, 1).all()
    record = json.loads((out / "metrics.json").read_text())
    metrics = pd.DataFrame(record["metrics"])
    assert {"auc", "ap", "eer", "accuracy", "false_positive_rate", "detection_rate"} <= set(metrics["metric"])
    assert set(metrics["threshold_name"]) == {"", "validation", "0.5"}   # the run's validation threshold and 0.5
    auc = metrics[metrics["metric"] == "auc"].iloc[0]
    assert auc["ci_low"] <= auc["estimate"] <= auc["ci_high"] and auc["real_groups"] == 6 and auc["fake_groups"] == 6
    assert record["detector"]["run_key"] == key and record["detector"]["thresholds"]["0.5"] == 0.5
    generators = pd.DataFrame(record["per_generator"])
    assert set(generators["generator"]) == {"gen_x"}
    assert (out / "report.html").read_text().count("<table") >= 2 and "Per generator" in (out / "report.md").read_text()
    assert "auc" in capsys.readouterr().out


def test_a_real_only_folder_gives_the_false_positive_rate_per_content_class(trained, tmp_path):
    study, key = trained
    root = tmp_path / "real_photos"
    for cls in ("cat", "dog"):
        for i in range(4):
            _png(root / cls / f"{i}.png", False, hash((cls, i)) % 1000)
    out = tmp_path / "out"
    assert _run(study, key, root, out, "--layout", "real_only") == 0
    record = json.loads((out / "metrics.json").read_text())
    metrics = pd.DataFrame(record["metrics"])
    assert set(metrics["metric"]) == {"false_positive_rate"}   # no AUC without fakes
    fpr = metrics[metrics["threshold_name"] == "validation"].iloc[0]
    assert 0 <= fpr["ci_low"] <= fpr["estimate"] <= fpr["ci_high"] <= 1 and fpr["real_groups"] == 8
    content = pd.DataFrame(record["per_content"])
    assert set(content["content"]) == {"cat", "dog"} and (content["real_images"] == 4).all()
    assert "Per content class" in (out / "report.md").read_text()


def test_a_fake_only_generic_folder_gives_the_detection_rate(trained, tmp_path):
    study, key = trained
    root = tmp_path / "fakes"
    for i in range(4):
        _png(root / "fake" / f"{i}.png", True, 300 + i)
    out = tmp_path / "out"
    assert _run(study, key, root, out) == 0
    assert set(pd.read_csv(out / "metrics.csv")["metric"]) == {"detection_rate"}


def test_missing_run_empty_folder_and_wrong_checkpoint_are_clear_errors(trained, tmp_path, capsys):
    study, key = trained
    root = _generic_folder(tmp_path / "generic")
    assert _run(study, "0123456789abcdef", root, tmp_path / "o1") == 2
    assert "no run '0123456789abcdef'" in capsys.readouterr().err
    (tmp_path / "empty" / "real").mkdir(parents=True)
    assert _run(study, key, tmp_path / "empty", tmp_path / "o2") == 2
    assert "no usable images" in capsys.readouterr().err
    checkpoint = tmp_path / "simple.pth"
    torch.save(create_model("simple_cnn").state_dict(), checkpoint)
    assert _run(study, str(checkpoint), root, tmp_path / "o3", "--model", "npr", "--size", "16") == 2
    assert "does not fit architecture 'npr'" in capsys.readouterr().err
    assert _run(study, str(checkpoint), root, tmp_path / "o4") == 2   # a checkpoint needs its architecture named
    assert "--model" in capsys.readouterr().err
    pickled = tmp_path / "pickled.pth"
    torch.save({"weights": object()}, pickled)   # not loadable with weights_only=True: never unpickled
    assert _run(study, str(pickled), root, tmp_path / "o5", "--model", "simple_cnn", "--size", "16") == 2
    assert "weights-only" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o5").exists()


def test_the_npr_authors_checkpoint_layout_loads_into_npr(trained, tmp_path):
    """NPR.pth (Tan et al.) names its layers conv1 ... layer2, fc1; it loads strictly into the registry's `npr`."""
    study, _ = trained
    torch.manual_seed(0)
    reference = create_model("npr").eval()
    authors = {(k.removeprefix("trunk.") if k.startswith("trunk.") else "fc1" + k[2:]): v
               for k, v in reference.state_dict().items()}
    assert "fc1.weight" in authors and "conv1.weight" in authors
    checkpoint = tmp_path / "NPR.pth"
    torch.save(authors, checkpoint)
    root = _generic_folder(tmp_path / "generic")
    out = tmp_path / "out"
    assert _run(study, str(checkpoint), root, out, "--model", "npr", "--size", "16") == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["detector"]["recipe"]["mode"] == "native_crop" and "validation" not in record["detector"]["thresholds"]
    predictions = pd.read_parquet(out / "predictions.parquet").sort_values("path")
    first = np.asarray(Image.open(predictions["path"].iloc[0]).convert("RGB"))
    window = Recipe(size=16, mode="native_crop").apply(first)
    x = (torch.from_numpy(window.copy()).permute(2, 0, 1)[None].float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
        / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        expected = torch.sigmoid(reference(x)).item()
    assert predictions["probability"].iloc[0] == pytest.approx(expected, abs=1e-5)


def test_a_torchvision_checkpoint_with_one_logit_loads_and_an_imagenet_head_does_not(trained, tmp_path, capsys):
    """CNNDetection (Wang et al. 2020) publishes torchvision ResNets with a one-logit head, wrapped as {"model": ...}."""
    import torchvision

    study, _ = trained
    root = _generic_folder(tmp_path / "generic")
    wrapped = tmp_path / "blur_jpg_prob0.5.pth"
    torch.save({"model": torchvision.models.resnet18(num_classes=1).state_dict()}, wrapped)
    assert _run(study, str(wrapped), root, tmp_path / "ok", "--model", "resnet18", "--size", "16",
                "--mode", "center_crop") == 0
    imagenet = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), imagenet)   # a 1000-class head: not a detector
    assert _run(study, str(imagenet), root, tmp_path / "bad", "--model", "resnet18", "--size", "16") == 2
    assert "shape mismatch" in capsys.readouterr().err
