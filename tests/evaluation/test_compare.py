import numpy as np
import pandas as pd
import pytest

from lib.evaluation import compare


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


def test_paired_verdicts_follow_the_interval():
    supported = compare.paired_comparison(synthetic_cv(0.05), "model", "big", "small")
    assert supported["verdict"] == "supported" and supported["mean_diff"] == pytest.approx(0.05, abs=0.01)
    none = compare.paired_comparison(synthetic_cv(0.0), "model", "big", "small")
    assert none["verdict"] == "inconclusive"
    table = compare.compare_to_baseline(synthetic_cv(0.05), "model", "small", metrics=["test_auc", "test_accuracy"])
    assert len(table) == 2 and (table["t_p_holm"] >= table["t_p"]).all()


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


def test_paired_comparison_with_an_all_nan_metric_is_inconclusive():
    cv = synthetic_cv().assign(test_auc=float("nan"))
    res = compare.paired_comparison(cv, "model", "big", "small")
    assert res["n"] == 0 and res["verdict"] == "inconclusive"
