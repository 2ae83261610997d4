import numpy as np
import pandas as pd
import pytest

from lib.evaluation import compare
from lib.evaluation import stats as S


def synthetic_cv(shift=0.05, n_folds=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for fold in range(n_folds):
        base = 0.7 + rng.normal(0, 0.02)
        for model, auc in (("small", base), ("big", base + shift + rng.normal(0, 0.005))):
            rows.append({"model": model, "fold": fold, "test_auc": auc, "test_ap": auc, "test_accuracy": auc - 0.1,
                         "test_f1": auc - 0.1, "run_key": f"{model}{fold}"})
    return pd.DataFrame(rows)


def test_summary_and_interval():
    cv = synthetic_cv()
    summary = compare.cv_summary(cv)
    small = summary[(summary["model"] == "small") & (summary["metric"] == "auc")].iloc[0]
    values = cv.loc[cv["model"] == "small", "test_auc"]
    assert small["mean"] == pytest.approx(values.mean()) and small["std"] == pytest.approx(values.std(ddof=1))
    assert small["ci_low"] < small["mean"] < small["ci_high"] and small["n"] == 5
    wide = compare.summary_wide(summary)
    assert list(wide.index) == ["small", "big"] and "±" in wide.loc["big", "auc"]


def synthetic_predictions(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    paths = [f"img{i}.png" for i in range(200)]
    labels = np.tile([0, 1], 100)
    for model, noise in (("good", 0.2), ("bad", 0.6)):
        for fold in range(3):
            for split, idx in (("val", range(0, 100)), ("test", range(100, 200))):
                for i in idx:
                    p = np.clip(labels[i] * 0.6 + 0.2 + rng.normal(0, noise), 0, 1)
                    rows.append({"model": model, "fold": fold, "split": split, "path": paths[i], "label": labels[i],
                                 "source": "gan" if labels[i] else "real", "probability": p})
    return pd.DataFrame(rows)


def test_ensemble_delong_mcnemar():
    preds = synthetic_predictions()
    ens = compare.fold_ensemble(preds)
    assert len(ens) == 200 and (ens["n_models"] == 3).all()
    res = compare.test_set_comparison(preds, "model", "good", "bad")
    assert res["n_test"] == 100 and res["delong_auc1"] > res["delong_auc2"] and res["delong_p"] < 0.01
    thr = compare.validation_thresholds(preds)
    assert set(thr.index) == {"good", "bad"} and thr.between(0, 1).all()


def test_per_source_summary_has_every_source():
    table = compare.per_source_summary(synthetic_predictions())
    assert set(table["source"]) == {"gan", "real"} and set(table["model"]) == {"good", "bad"}
    assert table["accuracy_mean"].between(0, 1).all()


# ----------------------------------------------------------------------------- the group protocol
def grouped_predictions(copies: int, models=(("a", 0.0), ("b", 0.0)), n_groups=4, seed=0, split="test", base=None):
    """n_groups real and n_groups fake groups, each `copies` identical images (crops of one photograph)."""
    rng = np.random.default_rng(seed)
    rows = []
    base = dict(enumerate(base)) if base is not None else {g: rng.uniform(0, 1) for g in range(2 * n_groups)}
    for model, shift in models:
        for g in range(2 * n_groups):
            label = int(g >= n_groups)
            for c in range(copies):
                rows.append({"model": model, "fold": 0, "split": split, "path": f"g{g}_{c}.png", "label": label,
                             "source": "fake" if label else "real", "group": f"g{g}",
                             "probability": float(np.clip(base[g] + shift * label, 0, 1))})
    return pd.DataFrame(rows)


def test_cluster_bootstrap_counts_groups_not_images():
    one = compare.metric_intervals(grouped_predictions(1), sets=["test"], metrics=["auc", "accuracy"])
    hundred = compare.metric_intervals(grouped_predictions(100), sets=["test"], metrics=["auc", "accuracy"])
    # 100 identical crops of a photograph carry the information of one photograph: the same interval as 1 crop
    assert np.allclose(one[["estimate", "ci_low", "ci_high"]], hundred[["estimate", "ci_low", "ci_high"]])
    assert (hundred["real_groups"] == 4).all() and (hundred["fake_groups"] == 4).all()
    # an image-level view (every crop its own group) would be far narrower: the bug the protocol fixes
    naive = grouped_predictions(100).assign(group=lambda d: d["path"])
    naive_iv = compare.metric_intervals(naive, sets=["test"], metrics=["auc"]).iloc[0]
    auc_iv = hundred[hundred["metric"] == "auc"].iloc[0]
    assert (naive_iv["ci_high"] - naive_iv["ci_low"]) < 0.5 * (auc_iv["ci_high"] - auc_iv["ci_low"])


def test_two_groups_per_class_is_two_units():
    """2 real + 2 fake groups x 100 identical images: as wide as 2 + 2 independent images."""
    scores = [0.3, 0.6, 0.5, 0.8]  # real, real, fake, fake: AUC 3/4
    one = compare.metric_intervals(grouped_predictions(1, n_groups=2, base=scores), sets=["test"], min_groups=2).iloc[0]
    hundred = compare.metric_intervals(grouped_predictions(100, n_groups=2, base=scores), sets=["test"],
                                       min_groups=2).iloc[0]
    assert hundred["estimate"] == pytest.approx(0.75)
    assert hundred["ci_low"] == pytest.approx(one["ci_low"]) and hundred["ci_high"] == pytest.approx(one["ci_high"])
    assert hundred["ci_high"] - hundred["ci_low"] > 0.2


def test_bootstrap_auc_and_ap_match_sklearn_and_stay_in_range():
    from sklearn.metrics import average_precision_score, roc_auc_score
    preds = synthetic_predictions().assign(group=lambda d: "g" + (d.index % 37).astype(str))
    iv = compare.metric_intervals(preds, sets=["test"], metrics=["auc", "ap"])
    ens = compare.fold_ensemble(preds)
    score = {"auc": roc_auc_score, "ap": average_precision_score}
    assert set(iv["metric"]) == {"auc", "ap"}
    for _, row in iv.iterrows():
        part = ens[ens["model"] == row["model"]]
        assert row["estimate"] == pytest.approx(score[row["metric"]](part["label"], part["probability"]))
        assert 0 <= row["ci_low"] <= row["estimate"] <= row["ci_high"] <= 1


def test_one_group_per_class_gives_no_interval():
    iv = compare.metric_intervals(grouped_predictions(5, n_groups=1), sets=["test"]).iloc[0]
    assert np.isnan(iv["ci_low"]) and "needs at least 3" in iv["note"]
    # two groups of a class: 3 distinct resamples only, too few for a percentile interval by default
    two = compare.metric_intervals(grouped_predictions(5, n_groups=2), sets=["test"]).iloc[0]
    assert np.isnan(two["ci_low"]) and two["real_groups"] == 2


def test_compare_family_verdicts_and_holm():
    preds = pd.concat([grouped_predictions(3, models=(("good", 0.4), ("base", 0.0), ("same", 0.0)), n_groups=15,
                                           split=s) for s in ("val", "test")])
    table = compare.compare_family(preds, "model", [("good", "base"), ("same", "base")])
    good = table[(table["a"] == "good") & (table["set"] == "test")].iloc[0]
    same = table[(table["a"] == "same") & (table["set"] == "oof")].iloc[0]
    assert good["verdict"] == "supported" and good["ci_low"] > 0 and good["real_groups"] == 15
    assert same["verdict"] == "inconclusive" and same["diff"] == 0
    assert (table["p_holm"] >= table["p"]).all() and set(table["set"]) == {"oof", "test"}
    worse = compare.compare_family(preds, "model", [("base", "good")], sets=["test"]).iloc[0]
    assert worse["verdict"] == "contradicted"


def test_fold_tests_nadeau_bengio_is_wider_and_omits_wilcoxon():
    cv = synthetic_cv(0.05, n_folds=3).rename(columns={"test_auc": "val_auc"})
    row = compare.fold_tests(cv, "model", [("big", "small")]).iloc[0]
    wide = cv.pivot(index="fold", columns="model", values="val_auc")
    plain = S.paired_tests(wide["big"], wide["small"])
    assert row["nb_ci_high"] - row["nb_ci_low"] > plain["diff_ci_high"] - plain["diff_ci_low"]
    assert np.isnan(row["wilcoxon_p"]) and "0.25" in row["wilcoxon_note"]
