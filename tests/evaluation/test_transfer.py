"""One-class and per-generator metrics of a detector on a folder (lib.evaluation.transfer)."""

import math

import numpy as np
import pandas as pd
import pytest

from lib.evaluation.transfer import folder_metrics, generator_frames, per_generator, per_level, rate_interval


def _frame(labels, probs, groups, sources=None):
    n = len(labels)
    return pd.DataFrame({"path": [f"p{i}" for i in range(n)], "label": labels, "probability": probs,
                         "group": groups, "source": sources or ["s"] * n})


def test_rate_interval_is_the_share_called_fake_with_a_group_bootstrap_interval():
    frame = _frame([0] * 8, [0.9, 0.8, 0.1, 0.2, 0.3, 0.1, 0.6, 0.05], ["a", "a", "b", "b", "c", "c", "d", "d"])
    row = rate_interval(frame, 0.5, n_boot=500)
    assert row["metric"] == "false_positive_rate" and row["estimate"] == pytest.approx(3 / 8)
    assert 0 <= row["ci_low"] <= row["estimate"] <= row["ci_high"] <= 1
    assert row["real_groups"] == 4 and row["fake_groups"] == 0 and row["note"] == ""
    # group "a" (both called fake) and group "b" (neither): the interval moves with groups, so it cannot reach 0 or 1
    # unless a replicate draws only groups without (or with only) false positives
    few = rate_interval(frame.iloc[:4], 0.5, n_boot=200)
    assert math.isnan(few["ci_low"]) and "2 group(s)" in few["note"]
    fakes = frame.assign(label=1)
    assert rate_interval(fakes, 0.5, n_boot=100)["metric"] == "detection_rate"
    with pytest.raises(ValueError, match="one class"):
        rate_interval(pd.concat([frame, fakes]), 0.5)


def test_folder_metrics_for_two_classes_and_for_one():
    rng = np.random.default_rng(0)
    labels = [0] * 10 + [1] * 10
    probs = np.clip(rng.normal(0.3, 0.1, 20) + 0.4 * np.array(labels), 0, 1)
    both = _frame(labels, probs, [f"g{i}" for i in range(20)])
    table = folder_metrics(both, {"validation": 0.45, "0.5": 0.5}, n_boot=300)
    assert list(table.loc[table["threshold_name"] == "", "metric"]) == ["auc", "ap", "eer"]
    at_validation = table[table["threshold_name"] == "validation"]
    assert set(at_validation["metric"]) == {"accuracy", "false_positive_rate", "detection_rate"}
    assert (at_validation["threshold"] == 0.45).all()
    real_only = folder_metrics(both[both["label"] == 0], {"0.5": 0.5}, n_boot=300)
    assert list(real_only["metric"]) == ["false_positive_rate"] and real_only["fake_images"].iloc[0] == 0
    with pytest.raises(ValueError, match="no usable image"):
        folder_metrics(both.iloc[:0], {"0.5": 0.5})


def test_each_generator_is_scored_against_its_own_reals_when_it_has_them():
    frame = _frame([0, 0, 1, 1, 0, 1], [0.1, 0.2, 0.9, 0.8, 0.3, 0.7], list("abcdef"),
                   ["biggan_real", "biggan_real", "biggan", "biggan", "lsun_real", "stylegan"])
    frames = generator_frames(frame)
    assert set(frames["biggan"]["source"]) == {"biggan_real", "biggan"}
    assert set(frames["stylegan"]["source"]) == {"biggan_real", "lsun_real", "stylegan"}   # no stylegan_real: all
    table = per_generator(frame, 0.5, n_boot=100)
    assert set(table.loc[table["generator"] == "biggan", "reals"]) == {"biggan_real"}
    assert set(table.loc[table["generator"] == "stylegan", "reals"]) == {"all real images"}
    assert set(table["metric"]) == {"auc", "ap", "detection_rate"}
    levels = per_level(frame, "source", 0.5, n_boot=100)
    assert len(levels) == 4 and set(levels["metric"]) == {"false_positive_rate", "detection_rate"}
