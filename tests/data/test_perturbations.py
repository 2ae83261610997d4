import numpy as np
import pandas as pd
import pytest
from PIL import Image

import lib.training.runstore as runstore
from lib.data.cache import build_cache, cache_key, cache_paths
from lib.data.perturbations import DEFAULT_SEVERITIES, KINDS, Perturbation, grid_from_params, parse, sweep
from lib.data.recipes import Recipe
from lib.fileio import sha256_file
from lib.training.fit import TrainConfig
from lib.training.runstore import RunSpec, train_or_load


def _noise_image(h=37, w=53, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth_image(h=64, w=64, seed=0) -> np.ndarray:
    """A random but photo-like image: 8x8 random colours upsampled (JPEG treats white noise as a worst case)."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _high_freq_energy(img: np.ndarray) -> float:
    x = img.astype(np.float64)
    return float((np.diff(x, axis=0) ** 2).mean() + (np.diff(x, axis=1) ** 2).mean())


# ------------------------------------------------------------------------------------------- the perturbations
@pytest.mark.parametrize("p", sweep(), ids=lambda p: p.spec)
def test_every_perturbation_keeps_shape_and_dtype(p):
    img = _noise_image()
    out = p.apply(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)
    assert np.array_equal(img, _noise_image())  # the input is not modified in place


def test_default_sweep_covers_every_kind_in_order():
    grid = sweep()
    assert [p.kind for p in grid] == [k for k in KINDS for _ in DEFAULT_SEVERITIES[k]]
    assert [p.spec for p in grid[:4]] == ["jpeg:95", "jpeg:75", "jpeg:50", "jpeg:30"]
    assert sweep({"blur": [1, 2]}) == [Perturbation("blur", 1.0), Perturbation("blur", 2.0)]


def test_stronger_blur_removes_more_high_frequencies():
    img = _noise_image(64, 64)
    blurred = [Perturbation("blur", s).apply(img) for s in DEFAULT_SEVERITIES["blur"]]
    energies = [_high_freq_energy(x) for x in [img, *blurred]]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


def test_lower_jpeg_quality_and_smaller_resize_give_larger_errors():
    img = _smooth_image()
    jpeg = [_mae(Perturbation("jpeg", q).apply(img), img) for q in (95, 75, 50, 30)]
    assert all(a < b for a, b in zip(jpeg, jpeg[1:])), jpeg
    assert 0 < jpeg[0] < 4  # q95 changes a photo-like image, but little
    resize = {f: _mae(Perturbation("resize", f).apply(img), img) for f in DEFAULT_SEVERITIES["resize"]}
    assert resize[0.25] > resize[0.5] > resize[0.75] > 0, resize


def test_resize_handles_tiny_images():
    out = Perturbation("resize", 0.25).apply(_noise_image(2, 3))  # 0.5 x 0.75 px rounds up to 1 x 1
    assert out.shape == (2, 3, 3)


@pytest.mark.parametrize("sigma", [5.0, 20.0])
def test_noise_has_the_asked_std_on_mid_grey(sigma):
    grey = np.full((64, 64, 3), 128, np.uint8)  # far from 0 and 255: clipping does not bite at these sigmas
    diff = Perturbation("noise", sigma).apply(grey).astype(np.float64) - 128
    assert abs(diff.mean()) < 0.05 * sigma
    assert abs(diff.std() - sigma) < 0.05 * sigma


def test_noise_is_deterministic_per_image_and_independent_of_call_order():
    p = Perturbation("noise", 10)
    a, b = _noise_image(seed=1), _noise_image(seed=2)
    first_a, first_b = p.apply(a), p.apply(b)
    assert np.array_equal(p.apply(b), first_b) and np.array_equal(p.apply(a), first_a)  # other order, same output
    assert np.array_equal(p.apply(a.copy()), first_a)
    assert np.array_equal(p.apply(a[::-1][::-1]), first_a)  # a non-contiguous view of the same pixels
    noise_a = first_a.astype(np.int16) - a
    noise_b = first_b.astype(np.int16) - b
    assert not np.array_equal(noise_a, noise_b)  # two images, two draws
    assert not np.array_equal(Perturbation("noise", 5).apply(a).astype(np.int16) - a, noise_a)


# --------------------------------------------------------------------------------------------- specs and grids
def test_spec_round_trips_through_parse():
    assert [Perturbation(k, s).spec for k, s in (("jpeg", 50), ("blur", 1.0), ("resize", 0.5), ("noise", 5))] == [
        "jpeg:50", "blur:1", "resize:0.5", "noise:5"]
    for p in sweep():
        assert parse(p.spec) == p and Perturbation.parse(p.spec).spec == p.spec and str(p) == p.spec
    assert parse(" jpeg : 50.0 ") == Perturbation("jpeg", 50)
    assert Perturbation("blur", np.float32(1.5)).spec == "blur:1.5"


@pytest.mark.parametrize("text", ["gauss:1", "jpeg", "jpeg:", "jpeg:abc", "jpeg:50:1", "jpeg:0", "jpeg:101",
                                  "jpeg:50.5", "blur:0", "blur:-1", "blur:nan", "blur:inf", "resize:0", "resize:1",
                                  "resize:1.5", "noise:0", "noise:-2", "", 50])
def test_invalid_specs_raise(text):
    with pytest.raises(ValueError):
        parse(text)


def test_invalid_perturbations_raise_with_clear_messages():
    with pytest.raises(ValueError, match="jpeg, blur, resize, noise"):
        Perturbation("gauss", 1)
    with pytest.raises(ValueError, match="number"):
        Perturbation("blur", "1")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        Perturbation("blur", 1).apply(np.zeros((8, 8), np.uint8))


def test_grid_from_params():
    grid = grid_from_params({"noise": [5, 10], "jpeg": [75], "resize": 0.5})
    assert [p.spec for p in grid] == ["noise:5", "noise:10", "jpeg:75", "resize:0.5"]
    assert grid_from_params({"blur": [1, 1.0]}) == [Perturbation("blur", 1)]  # repeats dropped
    with pytest.raises(ValueError, match="unknown perturbation kind.*'gauss'.*valid kinds: jpeg, blur, resize, noise"):
        grid_from_params({"jpeg": [50], "gauss": [1]})
    with pytest.raises(ValueError, match="quality"):
        grid_from_params({"jpeg": [0]})


# ----------------------------------------------------------------------------------------- the recipe's field
# Keys read from the code before the field was added: every existing recipe (and its caches and runs) keeps its key.
_OLD_KEYS = {
    Recipe(size=32): "6500702380cb1a8c",
    Recipe(size=48, mode="native_crop"): "199923ea9adfc3c2",
    Recipe(size=64, mode="native_crop", jpeg_quality=75): "d8bf266ae56bb414",
}


def test_recipes_without_a_perturbation_keep_their_keys():
    for recipe, key in _OLD_KEYS.items():
        assert recipe.key == key and "perturbation" not in recipe.to_dict()
        assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_a_perturbation_changes_the_key_and_is_stored_canonically():
    clean = Recipe(size=32)
    perturbed = Recipe(size=32, perturbation="jpeg:50")
    assert perturbed.key != clean.key and perturbed.to_dict()["perturbation"] == "jpeg:50"
    assert Recipe(size=32, perturbation="jpeg:50.0") == perturbed  # same pixels, same key
    assert Recipe(size=32, perturbation=Perturbation("jpeg", 50)) == perturbed
    assert Recipe(size=32, perturbation="jpeg:30").key != perturbed.key
    assert Recipe.from_dict(perturbed.to_dict()) == perturbed
    with pytest.raises(ValueError, match="Recipe.perturbation"):
        Recipe(perturbation="gauss:1")
    with pytest.raises(ValueError, match="Recipe.perturbation"):
        Recipe(perturbation="blur:0")


@pytest.mark.parametrize("spec", ["jpeg:50", "blur:2", "resize:0.5", "noise:10"])
def test_recipe_applies_the_perturbation_first(spec):
    img = _noise_image(40, 48)
    p = parse(spec)
    for clean in (Recipe(size=16), Recipe(size=24, mode="native_crop", jpeg_quality=75)):
        perturbed = Recipe(**{**clean.to_dict(), "perturbation": spec})
        assert np.array_equal(perturbed.apply(img, 0), clean.apply(p.apply(img), 0))
        assert not np.array_equal(perturbed.apply(img, 0), clean.apply(img, 0))


def _tiny_manifest(folder, n=4) -> pd.DataFrame:
    rows = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(_noise_image(16, 20, seed=10 + i)).save(path)
        rows.append({"path": path.as_posix(), "label": i % 2, "sha256": sha256_file(path)})
    return pd.DataFrame(rows)


def test_perturbed_cache_is_separate_and_leaves_the_clean_cache_untouched(tmp_path):
    manifest = _tiny_manifest(tmp_path)
    cache = tmp_path / "cache"
    clean, noisy = Recipe(size=8), Recipe(size=8, perturbation="noise:10")
    clean_arr = np.array(build_cache(manifest, clean, cache_dir=cache, progress=False))
    clean_npy = cache_paths(cache_key(manifest, clean), cache)[0]
    before = clean_npy.read_bytes()

    noisy_arr = build_cache(manifest, noisy, cache_dir=cache, progress=False)
    assert cache_key(manifest, noisy) != cache_key(manifest, clean)
    assert noisy_arr.shape == clean_arr.shape and not np.array_equal(noisy_arr, clean_arr)
    assert clean_npy.read_bytes() == before
    np.testing.assert_array_equal(build_cache(manifest, clean, cache_dir=cache, progress=False), clean_arr)
    # The noise follows each image, not its row: a reversed manifest caches the same rows, reversed.
    backwards = build_cache(manifest.iloc[::-1].reset_index(drop=True), noisy, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(backwards[::-1], noisy_arr)


def test_the_run_store_refuses_to_train_on_a_perturbed_recipe(study, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("build_cache was reached: the guard must come first")

    monkeypatch.setattr(runstore, "build_cache", no_training)
    spec = RunSpec.for_fold(study.dataset, study.splits, Recipe(size=16, perturbation="blur:1"), "simple_cnn",
                            TrainConfig(epochs=1, batch_size=8, device="cpu"), 0, {"widths": [4, 8]})
    with pytest.raises(ValueError, match="test time only"):
        train_or_load(spec, study.dataset, study.splits, runs_dir=study.runs, progress=False, cache_dir=study.cache)
    assert not study.runs.exists() and not study.cache.exists()


def test_strength_grows_with_every_kind_whichever_way_its_severity_runs():
    from lib.data.perturbations import IDENTITY, Perturbation

    for kind, severities in DEFAULT_SEVERITIES.items():   # each tuple runs from mild to strong
        strengths = [Perturbation(kind, s).strength for s in severities]
        assert strengths == sorted(strengths) and len(set(strengths)) == len(strengths) and min(strengths) > 0
    assert set(IDENTITY) == set(KINDS)
