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
