import numpy as np
import pandas as pd
import skimage.data
from PIL import Image

from lib.data import faces


def test_mtcnn_finds_the_astronaut_and_not_noise():
    face = skimage.data.astronaut()
    noise = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    boxes = faces.detect_boxes([face, noise], progress=False)
    assert boxes.shape == (2, 5)
    x0, y0, x1, y1, conf = boxes[0]
    assert conf > 0.9 and 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 200  # her face, upper centre
    assert np.isnan(boxes[1]).all()


def test_face_boxes_cached_and_rates(tmp_path):
    paths = []
    for i, img in enumerate([skimage.data.astronaut(), np.zeros((64, 64, 3), np.uint8) + 128]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    manifest = pd.DataFrame({"path": paths, "sha256": ["a", "b"], "label": [0, 1], "source": ["real", "gan"]})
    table = faces.face_boxes(manifest, cache_dir=tmp_path / "cache", progress=False)
    assert table["found"].tolist() == [True, False]
    assert len(list((tmp_path / "cache" / "faces").glob("*.parquet"))) == 1
    again = faces.face_boxes(manifest, cache_dir=tmp_path / "cache", progress=False)
    pd.testing.assert_frame_equal(table, again)
    rates = faces.detection_rates(manifest, table).set_index("class")
    assert rates.loc["real", "rate"] == 1.0 and rates.loc["fake", "rate"] == 0.0


def test_large_images_are_searched_downscaled_and_boxes_come_back_in_original_pixels():
    import time

    face = skimage.data.astronaut()  # 512 x 512
    big = np.asarray(Image.fromarray(face).resize((1536, 1536), Image.Resampling.BICUBIC))
    small, scale = faces.downscaled(big, 512)
    assert small.shape == (512, 512, 3) and scale == 1 / 3
    assert faces.downscaled(face, 512)[1] == 1.0  # nothing to shrink
    start = time.perf_counter()
    fast = faces.detect_boxes([big], progress=False)[0]
    fast_seconds = time.perf_counter() - start
    start = time.perf_counter()
    full = faces.detect_boxes([big], progress=False, max_side=4096)[0]
    full_seconds = time.perf_counter() - start
    reference = faces.detect_boxes([face], progress=False)[0]
    assert fast[4] > 0.9 and np.allclose(fast[:4], reference[:4] * 3, atol=12)  # same face, scaled back
    assert np.allclose(fast[:4], full[:4], atol=25)
    assert fast_seconds < full_seconds
