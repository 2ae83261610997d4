import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from lib.data.augment import AugmentPolicy
from lib.training.fit import TrainConfig, fit, predict, resolve_amp, select_device, seed_everything


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.features(x))


class Constant(nn.Module):
    """Same score for every image: validation AUC is 0.5 at every epoch."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 1)


def easy_data(n=64, size=8, seed=0):
    """Fakes are brighter: learnable in a couple of epochs by a tiny CNN."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 150, (n, 3, size, size)).astype(np.int64) + labels[:, None, None, None] * 100
    return images.clip(0, 255).astype(np.uint8), labels


CFG = TrainConfig(epochs=3, batch_size=16, lr=1e-2, seed=0, device="cpu")


def test_fit_learns_an_easy_task_and_reports_history():
    images, labels = easy_data()
    train, val = np.arange(0, 48), np.arange(48, 64)
    model, history = fit(TinyCNN(), images, labels, train, val, CFG, progress=False)
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_auc", "val_accuracy", "lr", "seconds", "best"]
    assert history["epoch"].tolist() == [1, 2, 3] and history["best"].sum() == 1
    assert history["val_auc"].max() > 0.9
    # the returned model IS the best epoch: its validation AUC equals the best recorded one
    prob = predict(model, images, val, device="cpu")
    best = history.loc[history["best"]].iloc[0]
    assert roc_auc_score(labels[val], prob) == pytest.approx(best["val_auc"])
    assert best["val_auc"] == history["val_auc"].max()


def test_same_seed_same_history():
    images, labels = easy_data()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, seed=1, device="cpu", augment=AugmentPolicy(noise_std=0.02))
    seed_everything(1)  # the initial weights are drawn when the model is built, before fit
    _, h1 = fit(TinyCNN(), images, labels, np.arange(48), np.arange(48, 64), cfg, progress=False)
    seed_everything(1)
    _, h2 = fit(TinyCNN(), images, labels, np.arange(48), np.arange(48, 64), cfg, progress=False)
    np.testing.assert_array_equal(h1["train_loss"].to_numpy(), h2["train_loss"].to_numpy())


def test_early_stopping_after_patience_epochs_without_improvement():
    images, labels = easy_data(n=32)
    cfg = TrainConfig(epochs=10, batch_size=16, patience=2, seed=0, device="cpu", scheduler="none")
    _, history = fit(Constant(), images, labels, np.arange(24), np.arange(24, 32), cfg, progress=False)
    assert history["epoch"].tolist() == [1, 2, 3]  # epoch 1 best, 2 and 3 not better -> stop
    assert history.loc[history["best"], "epoch"].tolist() == [1]


def test_regularization_hook_is_added_to_the_loss():
    class WithPenalty(TinyCNN):
        calls = 0

        def regularization_loss(self):
            WithPenalty.calls += 1
            return torch.tensor(10.0)

    images, labels = easy_data(n=32)
    cfg = TrainConfig(epochs=1, batch_size=16, seed=0, device="cpu")
    _, plain = fit(TinyCNN(), images, labels, np.arange(32), None, cfg, progress=False)
    _, penalised = fit(WithPenalty(), images, labels, np.arange(32), None, cfg, progress=False)
    assert WithPenalty.calls == 2  # two batches
    assert penalised["train_loss"].iloc[0] == pytest.approx(plain["train_loss"].iloc[0] + 10, abs=0.5)


@pytest.mark.parametrize("options", [
    dict(optimizer="sgd", scheduler="onecycle"),
    dict(optimizer="adam", scheduler="plateau", normalization="train"),
    dict(optimizer="adamw", scheduler="cosine", warmup_epochs=1, accum_steps=2, grad_clip=1.0, amp="bf16"),
])
def test_optimizer_scheduler_combinations_train(options):
    images, labels = easy_data(n=32)
    cfg = TrainConfig(epochs=2, batch_size=8, seed=0, device="cpu", **options)
    _, history = fit(TinyCNN(), images, labels, np.arange(24), np.arange(24, 32), cfg, progress=False)
    assert len(history) == 2 and np.isfinite(history["train_loss"]).all()
    if options["scheduler"] in ("onecycle", "cosine"):
        assert history["lr"].iloc[0] != history["lr"].iloc[1]


def test_predict_follows_the_order_of_indices():
    images, labels = easy_data(n=20)
    torch.manual_seed(0)
    model = TinyCNN()
    idx = np.array([3, 17, 0, 9])
    forward = predict(model, images, idx, batch_size=3, device="cpu")
    backward = predict(model, images, idx[::-1], batch_size=3, device="cpu")
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-5)
    assert ((forward > 0) & (forward < 1)).all()


def test_config_validation_devices_and_amp():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(epochs=2, warmup_epochs=2)
    assert TrainConfig(augment={"hflip_p": 0.2}).augment == AugmentPolicy(hflip_p=0.2)
    assert select_device("cpu").type == "cpu"
    assert resolve_amp("fp16", torch.device("cpu")) is None  # mixed precision: CUDA only
    images, labels = easy_data(n=8)
    with pytest.raises(ValueError, match="single class"):
        fit(TinyCNN(), images, np.zeros(8), np.arange(8), None, CFG, progress=False)


def test_seed_everything_repeats_torch_and_numpy():
    seed_everything(5)
    a = (torch.rand(3), np.random.rand(3))
    seed_everything(5)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
