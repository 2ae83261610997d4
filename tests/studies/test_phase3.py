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


def test_summaries_are_the_descriptive_fold_view_with_cost():
    cv = pd.DataFrame([{"model": m, "fold": f, **{f"test_{k}": v for k in ("auc", "ap", "accuracy", "f1")}}
                       for m, v in (("a", 0.6), ("b", 0.9)) for f in range(3)])
    cost = pd.DataFrame({"parameters": [10, 20], "epoch_seconds": [1.04, 2.0], "images_per_s": [100.0, 50.0]},
                        index=["a", "b"])
    summary, table = phase3.summaries(cv, cost)
    assert table.loc["b", "auc"].startswith("0.900 ± 0.000") and table.loc["a", "epoch_seconds"] == 1.0


def interval_rows(model: str, oof: float, test: float, metric: str = "auc") -> list[dict]:
    return [{"model": model, "set": s, "metric": metric, "estimate": e, "ci_low": e - 0.05, "ci_high": min(e + 0.05, 1),
             "real_groups": g, "fake_groups": 3 * g, "note": ""} for s, e, g in (("oof", oof, 8), ("test", test, 3))]


def test_interval_with_cost_joins_parameters_and_speed():
    cost = pd.DataFrame({"parameters": [10, 20], "images_per_s": [100.0, 50.0], "group": "x"}, index=["a", "b"])
    table = pd.DataFrame(interval_rows("b", 0.9, 0.8) + interval_rows("a", 0.6, 0.7))
    auc = phase3.interval_with_cost(table, cost)
    assert list(auc.index) == ["b", "a"] and (auc["set"] == "oof").all()
    assert auc["estimate"].tolist() == [0.9, 0.6] and auc["parameters"].tolist() == [20, 10]
    assert phase3.interval_with_cost(table, cost, "test").loc["a", "estimate"] == 0.7


# ----------------------------------------------------------------------------------------------- comparisons, selection

def grouped_predictions(strength: dict[str, dict[str, float]], n_groups: int = 12, copies: int = 2,
                        seed: int = 0) -> pd.DataFrame:
    """Validation rows (each trainval group validated by one of 3 fold models) and test rows (4 + 4 groups, every
    fold model), `copies` images per group; `strength[model][split]` separates the classes."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, s in strength.items():
        for split, groups in (("val", range(2 * n_groups)), ("test", range(100, 108))):
            for g in groups:
                label = int(g % 2)
                for fold in ([g % 3] if split == "val" else range(3)):
                    for c in range(copies):
                        z = s[split] * (2 * label - 1) + rng.normal(0, 1)
                        rows.append({"model": model, "run_key": f"{model}-{fold}", "fold": fold, "split": split,
                                     "path": f"g{g}_{c}.png", "label": label, "group": f"g{g}", "source": "s",
                                     "probability": 1 / (1 + np.exp(-z))})
    return pd.DataFrame(rows)


def test_reference_comparisons_pair_every_model_with_every_reference_on_oof_and_test():
    predictions = grouped_predictions({m: {"val": v, "test": v} for m, v in
                                       (("ref1", 0.2), ("ref2", 0.5), ("new", 3.0))})
    family = phase3.reference_comparisons(predictions, ["ref1", "ref2"])
    assert family[family["set"] == "oof"][["a", "b"]].values.tolist() == [["new", "ref1"], ["new", "ref2"]]
    assert set(family["set"]) == {"oof", "test"} and (family["metric"] == "auc").all()
    assert (family.loc[family["set"] == "oof", "verdict"] == "supported").all()
    assert phase3.reference_pairs(["r"], ["r", "x"]) == [("x", "r")], "a level is never paired with itself"
    with pytest.raises(ValueError, match="not in column"):
        phase3.reference_comparisons(predictions, ["nope"])


def test_select_models_refuses_test_predictions_test_columns_and_test_metrics():
    predictions = grouped_predictions({"a": {"val": 2.0, "test": 2.0}, "b": {"val": 1.0, "test": 1.0}})
    with pytest.raises(ValueError, match="validation data only.*test"):
        phase3.select_models(predictions)
    val = phase3.validation_predictions(predictions)
    assert set(val["split"]) == {"val"}
    with pytest.raises(ValueError, match="test columns"):
        phase3.select_models(val.assign(test_auc=0.9))
    for metric in ("test_auc", "test_accuracy", "holdout_auc"):
        with pytest.raises(ValueError, match="reads the test hold-out"):
            phase3.select_models(val, metric=metric)
    with pytest.raises(ValueError, match="unknown selection metric"):
        phase3.select_models(val, metric="val_loss")
    with pytest.raises(ValueError, match="test hold-out"):
        phase3.selection_record(plan(), pd.DataFrame(), pd.DataFrame(), [], "rule", "test_auc", 1)


def test_selection_follows_oof_when_oof_and_test_disagree():
    predictions = grouped_predictions({"good_on_val": {"val": 3.0, "test": 0.0},
                                       "good_on_test": {"val": 0.0, "test": 3.0}})
    val = phase3.validation_predictions(predictions)
    ranking, selected, rule = phase3.select_models(val, k=1)
    assert selected == ["good_on_val"] and ranking["model"].tolist() == ["good_on_val", "good_on_test"]
    assert rule.startswith("Chosen on the pooled out-of-fold validation predictions only")
    test_auc = phase1_intervals(predictions).set_index(["model", "set"])["estimate"]
    assert test_auc[("good_on_test", "test")] > test_auc[("good_on_val", "test")], "the toy sets really disagree"


def phase1_intervals(predictions):
    from lib.studies import phase1

    return phase1.intervals(predictions, metrics=("auc",))


def test_selection_keeps_indistinguishable_models_and_drops_worse_ones():
    predictions = grouped_predictions({"best": {"val": 2.0, "test": 2.0}, "tie": {"val": 2.0, "test": 2.0},
                                       "worse": {"val": -0.5, "test": 0.0}}, n_groups=20, seed=1)
    predictions.loc[predictions["model"] == "tie", "probability"] = \
        predictions.loc[predictions["model"] == "best", "probability"].to_numpy()
    val = phase3.validation_predictions(predictions)
    ranking, selected, _ = phase3.select_models(val, k=3, parameters={"best": 10, "tie": 5, "worse": 1})
    assert selected[0] == "tie", "equal estimates: fewer parameters wins"
    assert selected == ["tie", "best"] and ranking["rank"].tolist() == [1, 2, 3]
    r = ranking.set_index("model")
    assert r.loc["worse", "significantly_worse"] and r.loc["worse", "diff_ci_low"] > 0
    assert r.loc["best", "diff_to_best"] == 0 and not r.loc["best", "significantly_worse"]
    assert list(ranking.columns) == phase3.RANKING_COLUMNS
    assert ((ranking["ci_low"] >= 0) & (ranking["ci_high"] <= 1)).all() and (ranking["real_groups"] == 20).all()
    _, only, _ = phase3.select_models(val, k=1)
    assert len(only) == 1
    _, limited, rule = phase3.select_models(val, k=3, candidates=["best", "worse"])
    assert limited == ["best"] and rule.startswith("Candidates: best, worse.")
    with pytest.raises(ValueError, match="no validation predictions"):
        phase3.select_models(val, candidates=["nope"])
    with pytest.raises(ValueError):
        phase3.select_models(val, k=0)


def test_plan_selectable_leaves_out_phase1_baselines_with_other_preprocessing():
    assert plan().selectable == ["cnn (Phase 3 preprocessing)", "resnet (Phase 3 preprocessing)", "convnext",
                                 "mobilenet (ImageNet)"]
    assert plan(preprocessing()).selectable == ["cnn", "resnet", "convnext", "mobilenet (ImageNet)"], \
        "same preprocessing as Phase 1: the baselines compete"
    assert plan(rerun_baselines=False).selectable == ["convnext", "mobilenet (ImageNet)"]


def test_selection_record_gives_each_selected_label_its_groups_recipe_and_run_keys():
    p = plan()
    resnet = "resnet (Phase 3 preprocessing)"
    cv = fold_table({"cnn": [0.6, 0.6], resnet: [0.8, 0.7], "mobilenet (ImageNet)": [0.9, 0.8]})
    ranking = pd.DataFrame({"rank": [1, 2, 3], "model": ["mobilenet (ImageNet)", resnet, "cnn"]})
    record = phase3.selection_record(p, cv, ranking, ["mobilenet (ImageNet)", "cnn"], "the rule", "oof_auc", 2)
    assert record["selected"] == ["mobilenet (ImageNet)", "cnn"] and record["rule"] == "the rule"
    assert record["metric"] == "oof_auc" and record["chosen_on"] == "oof"
    mobilenet, cnn = record["entries"]
    assert mobilenet == {**MOBILENET.to_dict(), "recipe": Recipe(size=48, mode="face").to_dict(),
                         "train": p.phase3_config.to_dict(),
                         "run_keys": ["mobilenet (ImageNet)-0", "mobilenet (ImageNet)-1"]}
    assert cnn["recipe"] == PHASE1_RECIPE.to_dict() and cnn["train"] == CONFIG.to_dict() and cnn["model"] == "cnn"
    assert record["preprocessing"] == {"origin": "test origin", "condition": "cond", "rule": "",
                                       "face_min_confidence": 0.9}
    assert record["ranking"][0] == {"rank": 1, "model": "mobilenet (ImageNet)"}


# ----------------------------------------------------------------------------------------------- conclusions, headline

def family_row(a: str, b: str, name: str, diff: float, verdict: str, low: float = float("nan")) -> dict:
    return {"a": a, "b": b, "set": name, "metric": "auc", "diff": diff, "ci_low": low, "ci_high": low + 0.1,
            "verdict": verdict, "real_groups": 8 if name == "oof" else 1, "fake_groups": 24,
            "note": "" if low == low else "interval undefined: 1 real and 24 fake group(s)"}


def test_conclusions_are_computed_from_the_tables():
    table = pd.DataFrame(interval_rows("ref", 0.6, 0.7) + interval_rows("fast", 0.5, 0.55)
                         + interval_rows("best", 0.9, 0.8))
    cost = pd.DataFrame({"parameters": [1_000, 20, 3_000_000], "images_per_s": [100.0, 900.4, 10.0]},
                        index=["ref", "fast", "best"])
    family = pd.DataFrame([family_row("best", "ref", "oof", 0.3, "supported", 0.2),
                           family_row("fast", "ref", "oof", -0.1, "contradicted", -0.2),
                           family_row("best", "ref", "test", 0.1, "inconclusive"),
                           family_row("fast", "ref", "test", -0.15, "inconclusive")])
    folds = pd.DataFrame([{"a": "best", "b": "ref", "n_folds": 3, "nb_mean_diff": 0.3, "nb_ci_low": 0.1,
                           "nb_ci_high": 0.5, "wilcoxon_note": "omitted: 3 folds"},
                          {"a": "fast", "b": "ref", "n_folds": 3, "nb_mean_diff": -0.1, "nb_ci_low": -0.3,
                           "nb_ci_high": 0.1, "wilcoxon_note": "omitted: 3 folds"}])
    lines = phase3.conclusions(preprocessing(), table, cost, family, folds, pd.DataFrame(), "DeLong omitted.",
                               ["best"], "the rule", 32)
    assert lines[0].startswith("Preprocessing: test origin: condition 'cond'") and lines[0].endswith(".")
    assert lines[1] == ("best (3,000,000 parameters, 10 images/s): AUC on out-of-fold validation 0.900 [0.850, 0.950]; "
                        "8 real / 24 fake groups; on the test hold-out 0.800 [0.750, 0.850]; 3 real / 9 fake groups.")
    assert lines[2].startswith("ref (1,000 parameters, 100 images/s)") and lines[3].startswith("fast (20 parameters")
    assert lines[4:] == [
        "On out-of-fold validation (8 real / 24 fake groups): better than a Phase 1 baseline (Holm-stepped "
        "group-bootstrap interval of the AUC difference above 0): 1 of 2 comparisons: best > ref (+0.300).",
        "Worse than a baseline on out-of-fold validation (interval below 0): fast < ref (-0.100).",
        "On the test hold-out (1 real / 24 fake groups): better than a Phase 1 baseline (Holm-stepped group-bootstrap "
        "interval of the AUC difference above 0): 0 of 2 comparisons; 2 without an interval (interval undefined: 1 "
        "real and 24 fake group(s)).",
        "Secondary, fold level (Nadeau-Bengio corrected t on the validation AUC over 3 folds, not corrected for "
        "multiplicity): 1 of 2 pairs with a 95 % interval excluding 0: best vs ref +0.300. Wilcoxon omitted: 3 folds.",
        "DeLong omitted.",
        "Fastest at inference: fast (900 images/s on this machine, batch 32).",
        "Selected for Phase 4 on out-of-fold validation predictions: best (rule: the rule)",
    ]


def test_headline_table_follows_the_ranking_with_intervals_and_groups():
    table = pd.DataFrame(interval_rows("a", 0.6, 0.7) + interval_rows("b", 0.9, 0.8))
    cost = pd.DataFrame({"parameters": [10, 20], "images_per_s": [100.04, 50.0]}, index=["a", "b"])
    ranking = pd.DataFrame({"rank": [1, 2], "model": ["b", "a"], "selected": [True, False]})
    headline = phase3.headline_table(table, cost, ranking)
    assert headline["model"].tolist() == ["b", "a"] and headline["rank"].tolist() == [1, 2]
    assert headline.loc[0, "oof AUC"] == "0.900 [0.850, 0.950]" and headline.loc[0, "oof groups"] == \
        "8 real / 24 fake groups"
    assert headline["parameters"].tolist() == [20, 10] and headline["images_per_s"].tolist() == [50.0, 100.0]
    assert headline["selected"].tolist() == [True, False]
