"""Inference-time techniques on models and saved runs: temperature, ensembles, thresholds, TTA, MC dropout."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.special import expit
from sklearn import metrics as skm
from torch import nn

from lib.data.cache import build_cache
from lib.data.recipes import Recipe
from lib.evaluation import calibration as C
from lib.evaluation import ensembles as E
from lib.evaluation.metrics import best_threshold, threshold_sweep, threshold_sweep_with_choice
from lib.fileio import sha256_file
from lib.training.fit import TrainConfig, predict
from lib.training.inference import predict_mc_dropout, predict_tta, rescore_run
from lib.training.runstore import RunSpec, train_or_load


@pytest.fixture
def overconfident():
    """Labels drawn from sigmoid(true logit); the model reports 3x the true logit (over-confident)."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 1.5, 4000)
    y = (rng.random(z.size) < expit(z)).astype(int)
    return 3 * z[:2000], y[:2000], 3 * z[2000:], y[2000:]


# ------------------------------------------------------------------------------------------------ calibration

def test_temperature_one_changes_nothing():
    p = np.array([0.0, 1e-6, 0.2, 0.5, 0.9, 1.0 - 1e-6, 1.0])
    z = C.logits_from_probabilities(p)
    assert np.isfinite(z).all()
    assert np.array_equal(C.apply_temperature(z, 1.0), expit(z))
    assert np.allclose(C.apply_temperature(z, 1.0), p, atol=1e-11)
    with pytest.raises(ValueError, match="> 0"):
        C.apply_temperature(z, 0.0)


def test_fitted_temperature_softens_overconfident_logits(overconfident):
    z_val, y_val, z_test, y_test = overconfident
    t = C.fit_temperature(z_val, y_val)
    assert 2.0 < t < 4.5  # the logits were inflated 3x
    nll = lambda z, y, temp: skm.log_loss(y, C.apply_temperature(z, temp))
    assert nll(z_val, y_val, t) < nll(z_val, y_val, 1.0)
    assert nll(z_val, y_val, t) <= min(nll(z_val, y_val, t * 0.9), nll(z_val, y_val, t * 1.1))  # a minimum
    assert nll(z_test, y_test, t) < nll(z_test, y_test, 1.0)  # and it carries over to unseen data
    with pytest.raises(ValueError, match="real and fake"):
        C.fit_temperature([1.0, 2.0], [1, 1])


def test_ece_zero_when_calibrated_and_by_hand():
    y = np.array([1] * 3 + [0] * 7 + [1] * 8 + [0] * 2)
    p = np.array([0.3] * 10 + [0.8] * 10)
    assert C.expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.0)
    # 2 bins: [0.1, 0.2] -> mean 0.15 vs fake rate 0.5; [0.8, 0.9] -> 0.85 vs 1.0; each holds half the images
    y, p = np.array([0, 1, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    assert C.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    table = C.reliability_table(y, p, n_bins=2)
    assert table["count"].tolist() == [2, 2] and np.allclose(table["prob_true"], [0.5, 1.0])
    assert np.allclose(table["prob_pred"], [0.15, 0.85])


def test_calibration_report_before_and_after(overconfident):
    z_val, y_val, z_test, y_test = overconfident
    p_test = expit(z_test)
    same = C.calibration_report(y_test, p_test, 1.0).set_index("stage")
    assert np.allclose(same.loc["before", ["ece", "brier", "nll"]], same.loc["after", ["ece", "brier", "nll"]])
    assert same.loc["before", "brier"] == pytest.approx(skm.brier_score_loss(y_test, p_test))
    report = C.calibration_report(y_test, p_test, C.fit_temperature(z_val, y_val)).set_index("stage")
    for col in ("ece", "brier", "nll"):
        assert report.loc["after", col] < report.loc["before", col]


def test_temperature_scale_fits_each_run_on_its_validation_rows_only(overconfident):
    z_val, y_val, z_test, y_test = overconfident
    frames = []
    for key, scale in (("a", 1.0), ("b", 0.5)):
        frames.append(pd.DataFrame({
            "run_key": key, "label": np.r_[y_val, y_test], "split": ["val"] * y_val.size + ["test"] * y_test.size,
            "probability": expit(scale * np.r_[z_val, z_test])}))
    preds = pd.concat(frames, ignore_index=True)
    out = C.temperature_scale(preds)
    assert out["probability"].equals(preds["probability"])  # the raw column is never overwritten
    t = out.groupby("run_key")["temperature"].agg(["min", "max"])
    assert (t["min"] == t["max"]).all() and t.loc["a", "min"] == pytest.approx(2 * t.loc["b", "min"], rel=1e-3)
    a = out[out["run_key"] == "a"]
    assert t.loc["a", "min"] == pytest.approx(C.fit_temperature(C.logits_from_probabilities(
        a.loc[a["split"] == "val", "probability"]), a.loc[a["split"] == "val", "label"]))
    # test rows do not move the temperature
    shuffled = preds.copy()
    shuffled.loc[shuffled["split"] == "test", "probability"] = 0.5
    assert C.temperature_scale(shuffled)["temperature"].tolist() == out["temperature"].tolist()


def test_uncertainty_error_auroc():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.7, 0.8, 0.4, 0.9, 0.2])  # wrong: images 1 and 3
    spread = np.array([0.01, 0.3, 0.05, 0.2, 0.02, 0.1])
    out = C.uncertainty_error_auroc(y, p, spread)
    assert out["auroc"] == 1.0 and out["n_errors"] == 2
    assert out["auroc"] == skm.roc_auc_score([0, 1, 0, 1, 0, 0], spread)
    assert C.uncertainty_error_auroc(y, p, -spread)["auroc"] == 0.0
    right = C.uncertainty_error_auroc(y, y * 0.8 + 0.1, spread)
    assert np.isnan(right["auroc"]) and "right" in right["note"]
    wrong = C.uncertainty_error_auroc(y, 0.9 - y * 0.8, spread)
    assert np.isnan(wrong["auroc"]) and "wrong" in wrong["note"]


# ------------------------------------------------------------------------------------------------- ensembles

def test_voting():
    rng = np.random.default_rng(1)
    m = rng.random((50, 3))
    for k in range(3):
        assert np.array_equal(E.soft_vote(m, np.eye(3)[k]), m[:, k])
    same = np.repeat(m[:, :1], 4, axis=1)
    assert np.allclose(E.soft_vote(same), m[:, 0])
    assert np.allclose(E.soft_vote(m), m.mean(axis=1))
    votes = np.array([[0.9, 0.8, 0.1], [0.6, 0.2, 0.1], [0.5, 0.4, 0.2]])
    assert np.allclose(E.hard_vote(votes), [2 / 3, 1 / 3, 1 / 3])
    assert np.allclose(E.hard_vote(votes, [0.5, 0.3, 0.3]), [2 / 3, 1 / 3, 2 / 3])  # one threshold per model
    tie = E.hard_vote([[0.9, 0.1]])
    assert tie[0] == 0.5 and tie[0] >= 0.5  # a tie scores 0.5: fake at the usual >= 0.5 decision
    with pytest.raises(ValueError, match="summing to 1"):
        E.soft_vote(m, [0.5, 0.5, 0.5])


def test_fitted_weights_favour_the_informative_model():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    informative = expit(2.5 * (2 * y - 1) + rng.normal(0, 1.5, y.size))
    noise = rng.random(y.size)
    w = E.fit_ensemble_weights(np.c_[noise, informative, noise[::-1]], y)
    assert w.shape == (3,) and (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert w[1] > 0.9
    with pytest.raises(ValueError, match="real and fake"):
        E.fit_ensemble_weights(np.c_[noise, informative], np.ones(y.size, dtype=int))


def test_prediction_matrix_aligns_images_across_models():
    preds = pd.DataFrame({
        "model": ["a", "a", "b", "b", "a", "b"], "row": [3, 1, 1, 3, 7, 7], "label": [1, 0, 0, 1, 1, 1],
        "split": ["test"] * 4 + ["val"] * 2, "probability": [0.9, 0.2, 0.3, 0.6, 0.5, 0.5]})
    matrix, labels = E.prediction_matrix(preds, "test")
    assert matrix.index.tolist() == [1, 3] and matrix.columns.tolist() == ["a", "b"]
    assert matrix.to_numpy().tolist() == [[0.2, 0.3], [0.9, 0.6]] and labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="twice"):
        E.prediction_matrix(pd.concat([preds, preds]), "test")
    with pytest.raises(ValueError, match="every model"):
        E.prediction_matrix(preds.iloc[1:], "test")


# ------------------------------------------------------------------------------------------------ thresholds

def test_threshold_sweep_matches_sklearn_and_marks_the_validation_choice():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.6, 0.55, 0.8, 0.3, 0.2])
    sweep = threshold_sweep(y, p, [0.25, 0.5, 0.7])
    for row in sweep.itertuples():
        pred = (p >= row.threshold).astype(int)
        assert (row.accuracy, row.precision, row.recall, row.f1) == pytest.approx(
            (skm.accuracy_score(y, pred), skm.precision_score(y, pred), skm.recall_score(y, pred),
             skm.f1_score(y, pred)))
    val_y, val_p = np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.4, 0.9])
    marked = threshold_sweep_with_choice(val_y, val_p, y, p, thresholds=[0.25, 0.5, 0.7])
    chosen = marked[marked["chosen"]]
    assert len(chosen) == 1 and chosen["threshold"].iloc[0] == best_threshold(val_y, val_p) == pytest.approx(0.35)
    assert len(marked) == 4 and marked["threshold"].is_monotonic_increasing
    assert chosen["accuracy"].iloc[0] == skm.accuracy_score(y, p >= 0.35)


# ------------------------------------------------------------------------------------------- TTA, MC dropout

def tiny_net(p: float = 0.0, fixed_size: bool = False) -> nn.Module:
    torch.manual_seed(0)
    head = [nn.Flatten(), nn.Linear(4 * 8 * 8, 1)] if fixed_size else [nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                                       nn.Dropout(p), nn.Linear(4, 1)]
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), *head)
    with torch.no_grad():  # running statistics away from their defaults, so any update would show
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture
def images():
    return np.random.default_rng(3).integers(0, 256, (11, 3, 8, 8), dtype=np.uint8)  # the cache's (N, 3, H, W)


KW = dict(batch_size=4, device="cpu")
IDX = np.array([5, 0, 9, 2, 10, 1, 7])  # unsorted, last batch short


def test_identity_tta_is_plain_predict(images):
    net = tiny_net()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    plain = predict(net, images, IDX, mean=mean, std=std, **KW)
    assert np.array_equal(predict_tta(net, images, IDX, ("identity",), mean=mean, std=std, **KW), plain)
    assert np.array_equal(predict_tta(net, images, IDX, ("identity",), crop=8, mean=mean, std=std, **KW), plain)
    with pytest.raises(ValueError, match="transforms"):
        predict_tta(net, images, IDX, ("rotate",), **KW)


def test_hflip_tta(images):
    net = tiny_net()
    symmetric = np.concatenate([images[..., :4], images[..., :4][..., ::-1]], axis=-1)
    assert np.array_equal(predict_tta(net, symmetric, IDX, **KW), predict_tta(net, symmetric, IDX, ("identity",), **KW))
    flipped = np.ascontiguousarray(images[..., ::-1])
    both = predict_tta(net, images, IDX, **KW)
    assert np.allclose(both, (predict(net, images, IDX, **KW) + predict(net, flipped, IDX, **KW)) / 2)
    assert not np.allclose(both, predict(net, images, IDX, **KW))  # the flip does change this model's view


def test_five_crop_tta_takes_native_windows(images):
    net = tiny_net()
    crops = [images[:, :, r:r + 6, c:c + 6] for r, c in ((0, 0), (0, 2), (2, 0), (2, 2), (1, 1))]
    expected = np.mean([predict(net, np.ascontiguousarray(x), IDX, **KW) for x in crops], axis=0)
    assert np.allclose(predict_tta(net, images, IDX, ("identity",), crop=6, **KW), expected)
    with pytest.raises(ValueError, match="fixed input size"):
        predict_tta(tiny_net(fixed_size=True), images, IDX, crop=6, **KW)
    with pytest.raises(ValueError, match="crop"):
        predict_tta(net, images, IDX, crop=9, **KW)


def test_mc_dropout_without_drop_is_plain_predict(images):
    net = tiny_net(p=0.0)
    mean, spread = predict_mc_dropout(net, images, IDX, passes=5, **KW)
    assert np.allclose(mean, predict(net, images, IDX, **KW), rtol=0, atol=1e-12)
    assert np.allclose(spread, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="no dropout"):
        predict_mc_dropout(tiny_net(fixed_size=True), images, IDX, **KW)


def test_mc_dropout_samples_only_dropout_and_leaves_the_model_as_it_was(images):
    net = tiny_net(p=0.5)
    bn = {k: v.clone() for k, v in net[1].state_dict().items()}
    rng_state = torch.get_rng_state()
    mean, spread = predict_mc_dropout(net, images, IDX, passes=8, seed=1, **KW)
    assert (spread > 0).any() and mean.shape == spread.shape == IDX.shape
    assert all(torch.equal(v, net[1].state_dict()[k]) for k, v in bn.items())  # BatchNorm statistics untouched
    assert not any(m.training for m in net.modules())  # eval mode restored
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's random stream untouched
    again = predict_mc_dropout(net, images, IDX, passes=8, seed=1, **KW)
    assert np.array_equal(again[0], mean) and np.array_equal(again[1], spread)  # reproducible from the seed
    net.train()
    predict_mc_dropout(net, images, IDX, passes=2, **KW)
    assert all(m.training for m in net.modules())  # a model in train mode is handed back in train mode


def test_rescore_a_saved_run_reproduces_its_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        path = tmp_path / "img" / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((rng.integers(0, 150, (16, 16, 3)) + 100 * (i % 2)).astype(np.uint8)).save(path)
        rows.append({"path": path.as_posix(), "label": i % 2, "source": "s", "group": f"g{i}",
                     "sha256": sha256_file(path)})
    manifest = pd.DataFrame(rows)
    splits = pd.DataFrame({"sha256": manifest["sha256"], "split": ["trainval"] * 12 + ["test"] * 4,
                           "fold": [(i // 2) % 2 for i in range(12)] + [-1] * 4})
    dataset = SimpleNamespace(name="tiny", manifest=manifest, fingerprint="fp")
    recipe = Recipe(size=16)
    cfg = TrainConfig(epochs=1, batch_size=4, seed=0, device="cpu", eval_batch_size=4)
    spec = RunSpec.for_fold(dataset, splits, recipe, "simple_cnn", cfg, 0, {"widths": [4]})
    cache = tmp_path / "cache"
    run = train_or_load(spec, dataset, splits, runs_dir=tmp_path / "runs", progress=False, cache_dir=cache)
    run.model = None  # as a stored run: the model comes back from model.safetensors
    images = build_cache(manifest, recipe, cache_dir=cache, progress=False)
    out = rescore_run(run, images, transforms=("identity",), mc_passes=3)
    assert np.array_equal(out["tta_probability"], out["probability"])
    assert (out["mc_std"] > 0).any() and out["mc_probability"].between(0, 1).all()
    assert out.drop(columns=["tta_probability", "mc_probability", "mc_std"]).equals(run.predictions)
