"""Notebook 02's study functions: demonstration rows and grids, face-crop fallback, normalisation, conclusions."""

import numpy as np
import pandas as pd
from PIL import Image

from lib.data.augment import AugmentPolicy
from lib.data.recipes import Recipe
from lib.studies import preprocessing

MANIFEST = pd.DataFrame({"label": [0, 0, 0, 1, 1], "source": ["real", "real", "real", "gan", "gan"]})


def _image_manifest(tmp_path, sizes=((20, 16), (16, 16))):
    """One PNG per (width, height), real then fake, with its path, label and source."""
    rows = []
    for k, (width, height) in enumerate(sizes):
        path = tmp_path / f"{k}.png"
        Image.fromarray(np.full((height, width, 3), 40 * (k + 1), np.uint8)).save(path)
        rows.append({"path": path.as_posix(), "label": k % 2, "source": "gan" if k % 2 else "real"})
    return pd.DataFrame(rows)


def test_demo_rows_reals_first_capped_per_class_and_seeded():
    rows = preprocessing.demo_rows(MANIFEST, per_class=2, seed=0)
    assert len(rows) == 4 and set(rows[:2]) <= {0, 1, 2} and set(rows[2:]) == {3, 4}
    assert rows.tolist() == preprocessing.demo_rows(MANIFEST, per_class=2, seed=0).tolist()
    assert len(preprocessing.demo_rows(MANIFEST, per_class=5, seed=0)) == 5


def test_recipe_grid_shows_each_image_then_every_recipe(tmp_path):
    manifest = _image_manifest(tmp_path)
    images, titles = preprocessing.recipe_grid(manifest, [0, 1], preprocessing.geometry_recipes(8))
    assert titles == ["real 20x16", "resize", "letterbox", "center_crop",
                      "gan 16x16", "resize", "letterbox", "center_crop"]
    assert images[0].shape == (16, 20, 3) and all(img.shape == (8, 8, 3) for img in images[1:4])


def test_crop_face_falls_back_to_a_centre_crop_without_a_face():
    img = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    recipe = preprocessing.face_recipe(8, margin=0.2, min_confidence=0.9)
    fallback = preprocessing.crop_face(recipe, img, 0, np.full(4, np.nan))
    np.testing.assert_array_equal(fallback, Recipe(size=8, mode="center_crop").apply(img))
    face = preprocessing.crop_face(recipe, img, 0, np.array([2.0, 2.0, 8.0, 8.0]))
    assert not np.array_equal(face, fallback)


def test_bundled_crop_grid_titles_say_face_or_fallback():
    photos = {"a": np.zeros((16, 16, 3), np.uint8), "b": np.ones((16, 16, 3), np.uint8)}
    boxes = pd.DataFrame({"x0": [2.0, np.nan], "y0": [2.0, np.nan], "x1": [10.0, np.nan], "y1": [10.0, np.nan],
                          "confidence": [0.99, np.nan], "found": [True, False]}, index=["a", "b"])
    images, titles = preprocessing.bundled_crop_grid(photos, boxes, preprocessing.face_recipe(8, 0.2, 0.9))
    assert titles == ["a", "b", "face crop (face)", "face crop (fallback)"]
    assert images[0] is photos["a"] and images[2].shape == (8, 8, 3)


def test_dataset_face_grid_faces_first_then_fallbacks(tmp_path):
    manifest = _image_manifest(tmp_path, sizes=((16, 16), (16, 16), (16, 16)))
    boxes = pd.DataFrame({"x0": [np.nan, 1.0, 2.0], "y0": [np.nan, 1.0, 2.0], "x1": [np.nan, 9.0, 9.0],
                          "y1": [np.nan, 9.0, 9.0], "found": [False, True, True]})
    images, titles = preprocessing.dataset_face_grid(manifest, boxes, preprocessing.face_recipe(8, 0.2, 0.9), n_each=1)
    assert titles == ["gan", "face", "real", "fallback"] and len(images) == 4


def test_class_detection_rates_pool_the_sources():
    rates = pd.DataFrame({"class": ["fake", "fake", "real"], "source": ["a", "b", "real"], "n": [10, 30, 20],
                          "faces": [10, 10, 5], "rate": [1.0, 1 / 3, 0.25]})
    pooled = preprocessing.class_detection_rates(rates)
    assert pooled.loc["fake", "rate"] == 0.5 and pooled.loc["real", "n"] == 20 and "groups" not in pooled
    # with the manifest: the groups (photographs) behind each class
    manifest = MANIFEST.assign(group=["p1", "p1", "p2", "p1", "p3"])
    pooled = preprocessing.class_detection_rates(rates, manifest)
    assert pooled.loc["real", "groups"] == 2 and pooled.loc["fake", "groups"] == 2


def test_augmentation_grid_before_then_after_in_sorted_rows():
    images = np.stack([np.full((3, 4, 4), v, np.uint8) for v in (10, 20, 30)])
    grid, titles = preprocessing.augmentation_grid(images, np.array([2, 0]), AugmentPolicy(hflip_p=0.0), seed=0)
    assert titles == ["before", "before", "after", "after"]
    assert [int(img[0, 0, 0]) for img in grid] == [10, 30, 10, 30] and grid[0].shape == (4, 4, 3)


def test_real_training_rows_exclude_fakes_and_the_test_hold_out():
    splits = pd.DataFrame({"split": ["trainval", "test", "trainval", "trainval", "test"]})
    rows = preprocessing.real_training_rows(MANIFEST, splits)
    assert rows.tolist() == [0, 2]
    assert preprocessing.real_training_groups(MANIFEST.assign(group=["a", "b", "a", "c", "c"]), rows) == 1


def test_normalization_record_and_table():
    recipe = Recipe(size=8)
    record = preprocessing.normalization_record(np.array([0.1, 0.2, 0.3]), (0.4, 0.5, 0.6), 7, recipe)
    expected = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "n_images": 7, "recipe": recipe.key}
    assert record["real_train"] == expected
    assert all(type(v) is float for v in record["real_train"]["mean"])
    with_groups = preprocessing.normalization_record((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 7, recipe, n_groups=3)
    assert with_groups["real_train"] == {**expected, "n_groups": 3}
    table = preprocessing.normalization_table([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert table.loc["G", "real_train_mean"] == 0.2 and list(table.index) == ["R", "G", "B"]


def test_conclusions_computed_from_the_tables():
    summary = pd.DataFrame({"shared_groups": pd.array([0, 0, pd.NA], dtype="Int64")})
    class_rates = pd.DataFrame({"rate": [0.9, 0.5]}, index=["fake", "real"])
    bundled = pd.DataFrame({"found": [True, True, False]})
    lines = preprocessing.conclusions(summary, class_rates, bundled, (0.5, 0.4, 0.3), n_folds=5)
    assert lines[0] == "Split table: 5 folds + test hold-out; groups shared between roles: 0 (sound)."
    assert lines[1] == ("MTCNN finds a face in 50% of real and 90% of fake images; a difference this large is itself "
                        "a shortcut for face-crop models; 2/3 bundled face photographs detected.")
    assert lines[2].startswith("Real-only training statistics (R, G, B) mean 0.500, 0.400, 0.300 vs ImageNet 0.485")
    counted = pd.DataFrame({"n": [40, 20], "faces": [36, 10], "rate": [0.9, 0.5], "groups": [12, 3]},
                           index=["fake", "real"])
    lines = preprocessing.conclusions(summary, counted, bundled, (0.5, 0.4, 0.3), n_folds=5, real_images=18,
                                      real_groups=3)
    assert lines[1].startswith("MTCNN finds a face in 50% of real (20 images, 3 groups) and 90% of fake images "
                               "(40 images, 12 groups); ")
    assert lines[2].startswith("Real-only training statistics (R, G, B) over 18 real train+validation images "
                               "(3 groups) mean 0.500")
    leaky = pd.DataFrame({"shared_groups": pd.array([2, 0], dtype="Int64")})
    similar = pd.DataFrame({"rate": [0.5, 0.55]}, index=["fake", "real"])
    lines = preprocessing.conclusions(leaky, similar, bundled, (0.5, 0.4, 0.3), n_folds=5)
    assert lines[0].endswith("2 (LEAK).") and "rates are similar" in lines[1]
