"""Face boxes from MTCNN (facenet-pytorch), detected once per image and cached by the images' sha256.

The weights ship inside the facenet-pytorch wheel, so detection works offline. An image where no face
reaches `min_confidence` gets a NaN box: the face-crop recipe then falls back to a centre crop, and the
detection rate per source and class is reported, because a rate that differs between real and fake is
itself a shortcut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from lib.progress import tqdm

from lib.fileio import read_table, stable_hash, write_table
from lib.paths import CACHE_DIR

BOX_COLUMNS = ["x0", "y0", "x1", "y1", "confidence"]
# MTCNN's cost grows with the pixel count, and a face large enough to matter is still found at 512 px: larger
# images are searched on a downscaled copy and the boxes scaled back (1024 px photos: about 4x faster).
DETECT_MAX_SIDE = 512


def _detector(device: str = "cpu"):
    try:
        from facenet_pytorch import MTCNN
    except ImportError as err:  # installed with --no-deps by `make install`
        raise ImportError("face crops need facenet-pytorch: pip install --no-deps facenet-pytorch==2.6.0") from err
    # keep_all: we choose the most confident face ourselves; post_process off: we only want boxes.
    return MTCNN(keep_all=True, device=device, post_process=False)


def downscaled(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """`img` shrunk so that its long side is at most `max_side` (area-averaged), and the factor applied."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX)), scale


def detect_boxes(images, min_confidence: float = 0.9, device: str = "cpu", progress: bool = True,
                 max_side: int = DETECT_MAX_SIDE) -> np.ndarray:
    """(N, 5) float32 array of the most confident face per image: x0, y0, x1, y1, confidence; NaN where none.

    `images` is an iterable of HxWx3 uint8 arrays (sizes may differ, so MTCNN runs image by image). Images whose
    long side exceeds `max_side` are searched on a downscaled copy; boxes are in the original image's pixels.
    """
    detector = _detector(device)
    rows = []
    for img in tqdm(images, desc="MTCNN faces", disable=not progress, leave=False):
        small, scale = downscaled(img, max_side)
        boxes, probs = detector.detect(small)
        row = np.full(5, np.nan, dtype=np.float32)
        if boxes is not None:
            boxes = np.asarray(boxes).astype(np.float32) / scale  # numpy 2 returns an object array
            probs = np.asarray(probs).astype(np.float32)
            best = int(np.nanargmax(probs))
            if probs[best] >= min_confidence:
                row[:4], row[4] = boxes[best], probs[best]
        rows.append(row)
    return np.stack(rows) if rows else np.empty((0, 5), np.float32)


def face_boxes(
    manifest: pd.DataFrame,
    min_confidence: float = 0.9,
    cache_dir: Path = CACHE_DIR,
    progress: bool = True,
) -> pd.DataFrame:
    """Boxes for every manifest row (aligned, same order), cached on disk by image content and threshold."""
    from lib.data.imageio import load_rgb

    key = stable_hash({"sha256": manifest["sha256"].tolist(), "min_confidence": min_confidence, "detector": "mtcnn-2.6.0",
                       "max_side": DETECT_MAX_SIDE})
    path = Path(cache_dir) / "faces" / f"{key}.parquet"
    if path.exists():
        return read_table(path)
    boxes = detect_boxes((load_rgb(p) for p in manifest["path"]), min_confidence, progress=progress)
    table = pd.DataFrame(boxes, columns=BOX_COLUMNS)
    table.insert(0, "sha256", manifest["sha256"].to_numpy())
    table["found"] = ~np.isnan(table["confidence"])
    write_table(path, table)
    return table


def detection_rates(manifest: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """Share of images with a detected face per source and class."""
    df = manifest[["source", "label"]].assign(found=boxes["found"].to_numpy())
    out = df.groupby(["label", "source"], as_index=False).agg(n=("found", "size"), faces=("found", "sum"))
    out["rate"] = out["faces"] / out["n"]
    out["class"] = np.where(out["label"] == 1, "fake", "real")
    return out[["class", "source", "n", "faces", "rate"]]
