"""Phase 3 study functions (notebook 05): the plan of compared groups, cost table, tests against the references,
selection record, conclusions and headline, on small synthetic tables."""

import numpy as np
import pandas as pd
import pytest

from lib.data.recipes import Recipe
from lib.studies import phase3
from lib.training.fit import TrainConfig

PHASE1_RECIPE, CONFIG = Recipe(size=32), TrainConfig(epochs=3)
MOBILENET = phase3.Candidate("mobilenet (ImageNet)", "mobilenet_v2", {"pretrained": True})


def preprocessing(recipe: Recipe = PHASE1_RECIPE, normalization: str = "imagenet",
                  rule: str = "") -> phase3.Preprocessing:
    return phase3.Preprocessing(recipe, None, normalization, "cond", rule, "test origin")


def plan(prep: phase3.Preprocessing | None = None, rerun_baselines: bool = True) -> phase3.Plan:
    return phase3.Plan(PHASE1_RECIPE, CONFIG, prep or preprocessing(Recipe(size=48, mode="face")), ["cnn", "resnet"],
                       [phase3.Candidate("convnext", "convnext_tiny"), MOBILENET], ["a note"], rerun_baselines)


def fold_table(test_auc: dict[str, list[float]], groups: dict[str, str] | None = None) -> pd.DataFrame:
    rows = [{"model": model, "fold": fold, "run_key": f"{model}-{fold}", "test_auc": auc, "image_size": 32,
             "group": (groups or {}).get(model, "Phase 3"), "n_parameters": 10 * (i + 1)}
            for i, (model, aucs) in enumerate(test_auc.items()) for fold, auc in enumerate(aucs)]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- plan

def test_plan_repeats_the_baselines_only_when_phase3_preprocessing_differs():
    same = plan(preprocessing())
    assert same.same_as_phase1 and [g.name for g in same.groups()] == ["Phase 1 baseline", "Phase 3"]
    other_normalisation = plan(preprocessing(normalization="train"))
    assert not other_normalisation.same_as_phase1, "training differs even with Phase 1's recipe"
    groups = plan().groups()
    assert [g.name for g in groups] == ["Phase 1 baseline", "baseline, Phase 3 preprocessing", "Phase 3"]
    assert [c.label for c in groups[1].entries] == ["cnn (Phase 3 preprocessing)", "resnet (Phase 3 preprocessing)"]
    assert groups[0].recipe == PHASE1_RECIPE and groups[0].config == CONFIG
    assert all(g.recipe == Recipe(size=48, mode="face") for g in groups[1:])
    assert [g.name for g in plan(rerun_baselines=False).groups()] == ["Phase 1 baseline", "Phase 3"]


def test_plan_finds_labels_and_references():
    p = phase3.Plan(PHASE1_RECIPE, CONFIG, preprocessing(Recipe(size=48)), ["cnn", "cnn"], [MOBILENET])
    assert p.references == ["cnn"]
    group, candidate = p.find("cnn (Phase 3 preprocessing)")
    assert group.name == "baseline, Phase 3 preprocessing" and candidate == phase3.Candidate(
        "cnn (Phase 3 preprocessing)", "cnn")
    assert p.find("mobilenet (ImageNet)") == (p.groups()[-1], MOBILENET)
    with pytest.raises(KeyError, match="nope"):
        p.find("nope")


def test_plan_describe_names_rule_and_candidates_only_when_present():
    text = plan(preprocessing(rule="best mean")).describe().split("\n")
    assert text[0].startswith("Preprocessing of Phase 3: test origin: condition 'cond'")
    assert text[1:] == ["Phase 2 rule: best mean", "Same preprocessing and training as Phase 1: True",
                        "Candidates:", "  ['convnext', 'mobilenet (ImageNet)']", "  a note"]
    assert not any(line.startswith("Phase 2 rule") for line in plan().describe().split("\n"))


def test_run_plan_labels_groups_and_passes_boxes_only_to_face_recipes(monkeypatch):
    from lib.training import runstore

    calls = []

    def fake_many(dataset, splits, jobs, progress=True, **store_kw):
        calls.append(jobs)
        return [pd.DataFrame({"model": [job.model], "fold": 0, "run_key": [f"k{i}"]}) for i, job in enumerate(jobs)]

    monkeypatch.setattr(runstore, "run_cv_many", fake_many)
    monkeypatch.setattr(runstore, "collect_predictions", lambda cv, **kw: cv[["model", "run_key"]])
    boxes = np.zeros((4, 4))
    cv, predictions = phase3.run_plan(None, pd.DataFrame(), plan(), boxes)
    assert len(calls) == 1, "every group's runs go to the executor together"
    assert [job.boxes is boxes for job in calls[0]] == [False, False, True, True, True, True], \
        "the Phase 1 (resize) group needs no boxes"
    assert list(cv.columns)[-2:] == ["image_size", "group"]
    assert cv["group"].tolist() == ["Phase 1 baseline"] * 2 + ["baseline, Phase 3 preprocessing"] * 2 + ["Phase 3"] * 2
    assert cv["image_size"].tolist() == [32, 32, 48, 48, 48, 48]
    assert predictions["run_key"].tolist() == cv["run_key"].tolist()
    assert (predictions["model"] == cv["model"]).all()  # labelled by candidate


# ----------------------------------------------------------------------------------------------- cost, summaries

def test_cost_table_takes_each_label_from_its_first_run():
    cv = fold_table({"a": [0.6, 0.7], "b": [0.8, 0.9]}, groups={"a": "Phase 1 baseline"})
    epoch_seconds = pd.DataFrame({"epoch_seconds_mean": [1.5, 2.5]}, index=["a", "b"])
    speed = pd.DataFrame({"images_per_s": [100.0, 50.0], "batch_ms_median": [10.0, 20.0]}, index=["a", "b"])
    cost = phase3.cost_table(cv, epoch_seconds, speed)
    assert list(cost.index) == ["a", "b"]
    assert cost.to_dict(orient="list") == {"group": ["Phase 1 baseline", "Phase 3"], "image_size": [32, 32],
                                           "parameters": [10, 20], "epoch_seconds": [1.5, 2.5],
                                           "images_per_s": [100.0, 50.0], "batch_ms": [10.0, 20.0]}


def summary_table(means: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "metric": metric, "mean": v, "std": 0.01, "ci_low": v - 0.1, "ci_high": v + 0.1,
                          "n": 3} for m, v in means.items() for metric in ("auc", "ap")])


def test_metric_with_cost_joins_parameters_and_speed():
    cost = pd.DataFrame({"parameters": [10, 20], "images_per_s": [100.0, 50.0], "group": "x"}, index=["a", "b"])
    auc = phase3.metric_with_cost(summary_table({"b": 0.9, "a": 0.6}), cost)
    assert list(auc.index) == ["b", "a"] and (auc["metric"] == "auc").all()
    assert auc["parameters"].tolist() == [20, 10] and auc["images_per_s"].tolist() == [50.0, 100.0]


# ----------------------------------------------------------------------------------------------- tests, selection

def test_reference_tests_pair_every_model_with_every_reference_and_the_best_on_the_test_set(monkeypatch):
    cv = fold_table({"ref1": [0.6, 0.62, 0.61], "ref2": [0.7, 0.75, 0.72], "new": [0.9, 0.91, 0.93]})
    auc = cv.groupby("model", sort=False)["test_auc"].mean().rename("mean").to_frame()
    seen = []
    monkeypatch.setattr(phase3, "test_set_comparisons",
                        lambda predictions, others, reference: seen.append((list(others), reference)) or pd.DataFrame())
    paired, _ = phase3.reference_tests(cv, pd.DataFrame(), auc, ["ref1", "ref2"])
    assert paired[["a", "b"]].values.tolist() == [["new", "ref1"], ["new", "ref2"]]
    assert (paired["metric"] == "test_auc").all() and "t_p_holm" in paired
    assert seen == [(["new"], "ref2")], "the test-set tests are against the reference with the best mean AUC"


def test_selection_record_gives_each_selected_label_its_groups_recipe_and_run_keys():
    p = plan()
    resnet = "resnet (Phase 3 preprocessing)"
    cv = fold_table({"cnn": [0.6, 0.6], resnet: [0.8, 0.7], "mobilenet (ImageNet)": [0.9, 0.8]})
    ranking = pd.DataFrame({"rank": [1, 2, 3], "model": ["mobilenet (ImageNet)", resnet, "cnn"]})
    record = phase3.selection_record(p, cv, ranking, ["mobilenet (ImageNet)", "cnn"], "the rule", "test_auc", 2)
    assert record["selected"] == ["mobilenet (ImageNet)", "cnn"] and record["rule"] == "the rule"
    mobilenet, cnn = record["entries"]
    assert mobilenet == {**MOBILENET.to_dict(), "recipe": Recipe(size=48, mode="face").to_dict(),
                         "train": p.phase3_config.to_dict(),
                         "run_keys": ["mobilenet (ImageNet)-0", "mobilenet (ImageNet)-1"]}
    assert cnn["recipe"] == PHASE1_RECIPE.to_dict() and cnn["train"] == CONFIG.to_dict() and cnn["model"] == "cnn"
    assert record["preprocessing"] == {"origin": "test origin", "condition": "cond", "rule": "",
                                       "face_min_confidence": 0.9}
    assert record["ranking"][0] == {"rank": 1, "model": "mobilenet (ImageNet)"}


# ----------------------------------------------------------------------------------------------- conclusions, headline

def test_conclusions_are_computed_from_the_tables():
    auc = summary_table({"ref": 0.6, "fast": 0.5, "best": 0.9}).query("metric == 'auc'").set_index("model").assign(
        parameters=[1_000, 20, 3_000_000], images_per_s=[100.0, 900.4, 10.0])
    paired = pd.DataFrame([
        {"a": "best", "b": "ref", "verdict": "supported", "t_p_holm": 0.01},
        {"a": "fast", "b": "ref", "verdict": "contradicted", "t_p_holm": 0.2}])
    test_set = pd.DataFrame([
        {"a": "best", "b": "ref", "n_test": 40, "delong_auc1": 0.91, "delong_auc2": 0.62, "delong_p": 0.0012},
        {"a": "fast", "b": "ref", "n_test": 40, "delong_p": np.nan}])
    lines = phase3.conclusions(preprocessing(), auc, paired, test_set, ["best"], "the rule", 32)
    assert lines[0].startswith("Preprocessing: test origin: condition 'cond'") and lines[0].endswith(".")
    assert lines[1:] == [
        "best (3,000,000 parameters, 10 images/s): test AUC 0.900 ± 0.010 (95 % CI 0.800-1.000, 3 folds).",
        "ref (1,000 parameters, 100 images/s): test AUC 0.600 ± 0.010 (95 % CI 0.500-0.700, 3 folds).",
        "fast (20 parameters, 900 images/s): test AUC 0.500 ± 0.010 (95 % CI 0.400-0.600, 3 folds).",
        "Phase 3 models better than a Phase 1 baseline (paired 95 % interval above 0): 1 of 2 comparisons: "
        "best > ref (of which paired t Holm p < 0.05: 1).",
        "Worse than a baseline (interval below 0): fast < ref.",
        "DeLong vs ref on 40 test images: best AUC 0.910 vs 0.620, p = 0.0012.",
        "Fastest at inference: fast (900 images/s on this machine, batch 32).",
        "Selected for Phase 4: best (rule: the rule)",
    ]


def test_verdict_lines_without_supported_or_contradicted_comparisons():
    paired = pd.DataFrame({"a": ["x"], "b": ["ref"], "verdict": ["inconclusive"], "t_p_holm": [0.5]})
    assert phase3.verdict_lines(paired) == [
        "Phase 3 models better than a Phase 1 baseline (paired 95 % interval above 0): 0 of 1 comparisons."]


def test_headline_table_follows_the_ranking():
    table = pd.DataFrame({"auc": ["0.6", "0.9"], "parameters": [10, 20]}, index=pd.Index(["a", "b"], name="model"))
    ranking = pd.DataFrame({"rank": [1, 2], "model": ["b", "a"], "selected": [True, False]})
    headline = phase3.headline_table(table, ranking)
    assert headline.to_dict(orient="list") == {"model": ["b", "a"], "auc": ["0.9", "0.6"], "parameters": [20, 10],
                                               "rank": [1, 2], "selected": [True, False]}
