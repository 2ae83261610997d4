"""Mixup and CutMix of a normalised training batch and its 0/1 labels (torchvision's v2 MixUp / CutMix).

Used by the training loop only, after normalisation: the mixed labels are soft (a convex combination), so the loss
must take soft targets. torchvision draws its parameters from torch's global CPU generator; to make runs
reproducible without touching the global stream, every batch runs the transform inside ``fork_rng`` with the CPU
generator seeded from our own ``torch.Generator`` (seeded once from the run's seed), and the global state is restored
afterwards. torchvision pairs each sample with its neighbour (``roll(1)``), while the loader sorts indices inside a
batch (and manifests are often ordered by class), so the batch is first put in a random order of our own.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


class BatchMixer:
    """``mixer(x, y) -> (x, y_soft)``: with probability ``mix_prob`` the batch is mixed, by Mixup
    (``mixup_alpha`` > 0) or CutMix (``cutmix_alpha`` > 0), by either one with probability 0.5 when both are on (as
    timm's switch_prob). alpha is the Beta(alpha, alpha) parameter of the mixing weight; 0 turns a method off. Mixed
    labels: Mixup lam * y + (1 - lam) * y_partner, CutMix the same with lam = 1 - pasted area share.
    """

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, mix_prob: float = 1.0, seed: int = 0):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0 (0 = off), got {mixup_alpha}, {cutmix_alpha}")
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be a probability in [0, 1], got {mix_prob}")
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=2) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=2) if cutmix_alpha > 0 else None
        self.mix_prob = float(mix_prob)
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def active(self) -> bool:
        return (self.mixup is not None or self.cutmix is not None) and self.mix_prob > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active or x.shape[0] < 2:
            return x, y
        g = self.generator
        # the same draws every batch, whatever is picked: the stream never depends on earlier outcomes
        apply, pick = torch.rand(2, generator=g).tolist()
        perm = torch.randperm(x.shape[0], generator=g)
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        if apply >= self.mix_prob:
            return x, y
        transform = self.mixup if self.cutmix is None else self.cutmix if self.mixup is None else \
            (self.cutmix if pick < 0.5 else self.mixup)
        perm = perm.to(x.device)
        with torch.random.fork_rng(devices=[]):  # CPU only: torchvision draws its parameters on the CPU
            torch.default_generator.manual_seed(seed)
            mixed, soft = transform(x[perm], y[perm].long())
        return mixed, soft[:, 1].to(y.dtype)
