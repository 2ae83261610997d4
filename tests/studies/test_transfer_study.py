"""Notebook 10's library: the robustness sweep reads only test images, re-scoring reproduces the saved runs, and the
claims go through the one comparison rule."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import lib.training.scoring as scoring
from lib.data.perturbations import IDENTITY, Perturbation
from lib.data.recipes import Recipe
from lib.executors import LocalExecutor
from lib.studies import transfer as tr
from lib.training.fit import TrainConfig
from lib.training.runstore import run_cv


@pytest.fixture
def saved(study):
    cv = run_cv(study.dataset, study.splits, Recipe(size=16), "simple_cnn",
                TrainConfig(epochs=1, batch_size=8, lr=1e-3, seed=0, patience=1), runs_dir=study.runs,
                cache_dir=study.cache, progress=False, executor=LocalExecutor())
    models = pd.DataFrame({"detector": "simple_cnn", "origin": "test", "trained_on": "all sources",
                           "fold": cv["fold"], "run_key": cv["run_key"], "same_split": True})
    return study, models


def test_perturbations_touch_only_the_test_images_and_clean_rescoring_reproduces_the_runs(saved, monkeypatch):
    study, models = saved
    seen = []
    real_build = scoring.build_cache

    def spy(manifest, recipe, **kw):
        seen.append((recipe.perturbation, set(manifest["path"])))
        return real_build(manifest, recipe, **kw)

    monkeypatch.setattr(scoring, "build_cache", spy)
    grid = [Perturbation("jpeg", 30), Perturbation("blur", 2.0), Perturbation("noise", 10.0)]
    view = SimpleNamespace(manifest=study.dataset.manifest, splits=study.splits)
    robust = tr.robustness_predictions(view, models, grid, runs_dir=study.runs, cache_dir=study.cache, progress=False)
    test_paths = set(study.dataset.manifest.loc[study.splits["split"] == "test", "path"])
    assert {p for p, _ in seen} == {"", "jpeg:30", "blur:2", "noise:10"}
    assert all(paths == test_paths for _, paths in seen)   # never a training, validation or holdout image
    assert set(robust["path"]) == test_paths and robust.groupby("condition").size().eq(len(test_paths)).all()
    stored = tr.stored_predictions(models, study.runs)
    assert tr.clean_check(robust, stored) < 1e-6
    assert not robust.loc[robust["condition"] == "blur:2", "probability"].equals(
        robust.loc[robust["condition"] == "clean", "probability"])


def test_the_table_has_a_clean_point_per_kind_and_the_family_pairs_clean_with_the_strongest(saved):
    study, models = saved
    grid = tr.perturbation_grid({"jpeg": [75, 30], "resize": [0.5, 0.25]})
    view = SimpleNamespace(manifest=study.dataset.manifest, splits=study.splits)
    robust = tr.robustness_predictions(view, models, grid, runs_dir=study.runs, cache_dir=study.cache, progress=False)
    table = tr.robustness_table(robust, pd.Series({"simple_cnn": 0.5}), n_boot=100)
    clean = table[(table["condition"] == "clean") & (table["metric"] == "auc")]
    assert dict(zip(clean["kind"], clean["severity"])) == IDENTITY
    assert tr.robustness_pairs(robust) == [("simple_cnn | clean", "simple_cnn | jpeg:30"),
                                           ("simple_cnn | clean", "simple_cnn | resize:0.25")]
    family = tr.robustness_family(robust, n_boot=100)
    assert len(family) == 2 and set(family["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    headline = tr.headline(table, grid)
    assert list(headline.columns) == ["detector", "AUC clean", "AUC jpeg:30", "AUC resize:0.25"]
