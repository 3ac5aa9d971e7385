"""Synthetic genre generators: format, determinism, variety, registry, genre separability."""

import numpy as np
import pytest

from workbench import synth
from features import extract_features

GENRES = ("jazz", "blues", "rock", "pop", "classical")


def test_registry_order_matches_seed_and_config():
    assert tuple(synth.GENRE_GENERATORS) == GENRES
    try:
        from configuration import DEFAULT_GENRES
    except ImportError:
        pytest.skip("configuration.py not importable")
    assert tuple(synth.GENRE_GENERATORS) == tuple(DEFAULT_GENRES)


@pytest.mark.parametrize("genre", GENRES)
def test_clip_format(genre):
    rng = np.random.default_rng(123)
    y = synth.generate_clip(genre, rng, duration=2.5)
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.shape == (round(2.5 * synth.SAMPLE_RATE),)
    assert np.isfinite(y).all()
    assert np.abs(y).max() <= 1.0
    assert np.abs(y).max() > 0.1  # audible, not silence
    # default length is drawn from the clip-length range
    lengths = [len(synth.generate_clip(genre, np.random.default_rng(s))) for s in range(5)]
    lo, hi = synth.CLIP_SECONDS_RANGE
    assert all(lo * synth.SAMPLE_RATE <= n <= hi * synth.SAMPLE_RATE for n in lengths)
    assert len(set(lengths)) > 1
    # other sample rates
    y16 = synth.generate_clip(genre, np.random.default_rng(1), sr=16000, duration=1.0)
    assert y16.shape == (16000,) and y16.dtype == np.float32


@pytest.mark.parametrize("genre", GENRES)
def test_same_seed_same_audio_different_seed_different_audio(genre):
    a = synth.generate_clip(genre, np.random.default_rng(7), duration=1.5)
    b = synth.generate_clip(genre, np.random.default_rng(7), duration=1.5)
    c = synth.generate_clip(genre, np.random.default_rng(8), duration=1.5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_generate_dataset_deterministic_and_labelled():
    clips, labels = synth.generate_dataset(3, seed=5, duration=1.0)
    clips2, labels2 = synth.generate_dataset(3, seed=5, duration=1.0)
    assert len(clips) == 15 and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    assert labels.dtype == np.int64
    for a, b in zip(clips, clips2):
        np.testing.assert_array_equal(a, b)
    # a clip does not depend on the dataset size or the genre subset
    more, _ = synth.generate_dataset(4, seed=5, duration=1.0)
    np.testing.assert_array_equal(clips[0], more[0])
    sub, sub_labels = synth.generate_dataset(3, seed=5, genres=["rock"], duration=1.0)
    np.testing.assert_array_equal(sub[0], clips[6])
    assert sub_labels.tolist() == [0, 0, 0]
    other, _ = synth.generate_dataset(3, seed=6, duration=1.0)
    assert not np.allclose(clips[0][: len(other[0])], other[0][: len(clips[0])])


def test_unknown_genre_lists_known_genres():
    with pytest.raises(KeyError) as err:
        synth.generate_clip("polka", np.random.default_rng(0))
    assert "polka" in str(err.value) and "jazz" in str(err.value) and "classical" in str(err.value)
    with pytest.raises(KeyError):
        synth.generate_dataset(1, seed=0, genres=["jazz", "polka"])


def test_bad_duration_rejected():
    with pytest.raises(ValueError, match="duration"):
        synth.make_rock(np.random.default_rng(0), duration=0)


def test_register_genre_adds_one_entry():
    def make_drone(rng, sr=synth.SAMPLE_RATE, duration=None):
        n = int(round((duration or 1.0) * sr))
        t = np.arange(n) / sr
        return (0.5 * np.sin(2 * np.pi * rng.uniform(100, 200) * t)).astype(np.float32)

    try:
        synth.register_genre("drone", make_drone)
        assert list(synth.GENRE_GENERATORS)[-1] == "drone"
        clips, labels = synth.generate_dataset(2, seed=0, genres=["jazz", "drone"], duration=1.0)
        assert labels.tolist() == [0, 0, 1, 1] and len(clips[2]) == synth.SAMPLE_RATE
        with pytest.raises(ValueError, match="already registered"):
            synth.register_genre("drone", make_drone)
        synth.register_genre("drone", make_drone, overwrite=True)
        with pytest.raises(TypeError):
            synth.register_genre("x", "not a function")
    finally:
        synth.GENRE_GENERATORS.pop("drone", None)
    assert tuple(synth.GENRE_GENERATORS) == GENRES


def _features(n_per_genre, seed):
    clips, labels = synth.generate_dataset(n_per_genre, seed=seed)
    return np.stack([extract_features(c) for c in clips]), labels


def test_genres_are_varied_families_yet_separable():
    """Clips of one genre vary (tempo, level, timbre...), but a linear classifier on z-scored
    features still tells the genres apart on unseen seeds."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = _features(12, seed=1)
    x_test, y_test = _features(6, seed=2)
    tempo, rms, centroid = 57, 56, 52
    for g in range(len(GENRES)):
        rows = x_train[y_train == g]
        assert np.std(rows[:, rms]) > 0 and np.std(rows[:, centroid]) > 0  # level, brightness vary
        assert len(np.unique(np.round(rows[:, tempo]))) > 1  # tempo varies
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    clf = LogisticRegression(max_iter=2000).fit((x_train - mean) / std, y_train)
    assert clf.score((x_test - mean) / std, y_test) >= 0.9


def test_genre_signatures():
    """The seed's characteristics show in the features: classical (no drums, sustained partials)
    is the most harmonic and darker than distorted rock; pop's drums make it less harmonic."""
    x, y = _features(6, seed=3)
    hr = {g: x[y == i, 58].mean() for i, g in enumerate(GENRES)}
    centroid = {g: x[y == i, 52].mean() for i, g in enumerate(GENRES)}
    assert hr["classical"] == max(hr.values())
    assert hr["pop"] < hr["classical"]
    assert centroid["rock"] > centroid["classical"]
