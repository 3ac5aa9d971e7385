"""Few-shot genres: episode sampling, prototypical losses, add_genre from audio files, save/load,
and the episodic training flag."""

import numpy as np
from workbench.data import feature_stats  # noqa: E402
import pytest
import torch
import torch.nn.functional as F

from workbench import fewshot
import train
from workbench import settings, training  # noqa: E402
from configuration import MusicGenreMoEConfig
from modeling import MusicGenreMoE

TINY = dict(hidden_size=16, expert_hidden_size=8, expert_output_size=4, gate_hidden_sizes=[8, 8],
            classifier_hidden_size=8)


def toy_rows(n_classes=5, n_tracks=5, n_windows=6):
    """labels, tracks for n_classes x n_tracks recordings of n_windows windows each."""
    labels = np.repeat(np.arange(n_classes), n_tracks * n_windows)
    tracks = np.repeat(np.arange(n_classes * n_tracks), n_windows)
    return labels, tracks


# -- episodes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k_shot", [1, 5])
def test_support_and_query_never_share_a_recording(k_shot):
    labels, tracks = toy_rows()
    for ep in fewshot.sample_episodes(200, labels, tracks, n_way=5, k_shot=k_shot, n_query=5, seed=1):
        assert len(ep.support) == 5 * k_shot and len(ep.query) == 25
        assert not set(tracks[ep.support]) & set(tracks[ep.query])
        assert len(set(ep.support.tolist())) == len(ep.support)  # no window twice
        np.testing.assert_array_equal(labels[ep.support], ep.classes[ep.support_labels])
        np.testing.assert_array_equal(labels[ep.query], ep.classes[ep.query_labels])
        for i in range(5):  # queries of a class come from its one query recording
            assert set(tracks[ep.query[ep.query_labels == i]]) == {ep.query_tracks[i]}
            # window shots are spread round-robin: K shots from min(K, 4) recordings
            assert len(set(tracks[ep.support[ep.support_labels == i]])) == min(k_shot, 4)


def test_episodes_are_reproducible_and_cover_every_query_recording():
    labels, tracks = toy_rows()
    a = fewshot.sample_episodes(50, labels, tracks, 5, 1, 3, seed=7)
    b = fewshot.sample_episodes(50, labels, tracks, 5, 1, 3, seed=7)
    assert all(np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query) for x, y in zip(a, b))
    assert set(np.concatenate([e.query_tracks for e in a]).tolist()) == set(range(25))


def test_recording_shots_take_whole_recordings():
    labels, tracks = toy_rows()
    ep = fewshot.sample_episode(np.random.default_rng(0), labels, tracks, 3, 2, 4, shot_unit="recording")
    assert len(ep.support) == 3 * 2 * 6 and not set(tracks[ep.support]) & set(tracks[ep.query])
    with pytest.raises(ValueError, match="need 6 recordings, got 5"):
        fewshot.sample_episode(np.random.default_rng(0), labels, tracks, 3, 5, 4, shot_unit="recording")


def test_episode_errors_name_the_problem():
    labels, tracks = toy_rows(n_tracks=1)
    with pytest.raises(ValueError, match="needs >= 2 recordings"):
        fewshot.sample_episode(np.random.default_rng(0), labels, tracks, 2, 1, 1)
    labels, tracks = toy_rows()
    with pytest.raises(ValueError, match="n_way=6"):
        fewshot.sample_episode(np.random.default_rng(0), labels, tracks, 6, 1, 1)
    with pytest.raises(ValueError, match="25 window shots requested, only 24"):
        fewshot.sample_episode(np.random.default_rng(0), labels, tracks, 2, 25, 1)


# -- prototypes and losses --------------------------------------------------------------------------


def test_prototype_logits_and_loss_match_a_direct_computation():
    torch.manual_seed(0)
    s, q = torch.randn(6, 3), torch.randn(4, 3)
    sy, qy = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2, 2])
    protos = torch.stack([s[sy == c].mean(0) for c in range(3)])
    expected = -((q[:, None] - protos[None]) ** 2).sum(-1)
    torch.testing.assert_close(fewshot.prototype_logits(s, sy, q, 3), expected)
    torch.testing.assert_close(fewshot.prototypical_loss(s, sy, q, qy, 3), F.cross_entropy(expected, qy))
    cos = fewshot.prototype_logits(s, sy, q, 3, metric="cosine")
    sn = F.normalize(s, dim=1)
    pn = F.normalize(torch.stack([sn[sy == c].mean(0) for c in range(3)]), dim=1)
    torch.testing.assert_close(cos, 10 * F.normalize(q, dim=1) @ pn.T)


def brute_force_batch_loss(emb, labels, metric):
    logits, targets = [], []
    classes = sorted(set(labels.tolist()))
    e = F.normalize(emb, dim=1) if metric == "cosine" else emb
    for i in range(len(e)):
        own = [j for j in range(len(e)) if labels[j] == labels[i] and j != i]
        if not own:
            continue
        row = []
        for c in classes:
            members = own if c == labels[i] else [j for j in range(len(e)) if labels[j] == c]
            p = e[members].mean(0)
            row.append(10 * (e[i] @ F.normalize(p, dim=0)) if metric == "cosine" else -((e[i] - p) ** 2).sum())
        logits.append(torch.stack(row))
        targets.append(classes.index(labels[i].item()))
    return F.cross_entropy(torch.stack(logits), torch.tensor(targets))


@pytest.mark.parametrize("metric", fewshot.METRICS)
def test_batch_loss_uses_leave_one_out_prototypes(metric):
    torch.manual_seed(1)
    emb = torch.randn(13, 4, requires_grad=True)
    labels = torch.tensor([3, 3, 3, 1, 1, 4, 4, 4, 4, 7, 1, 3, 4])  # class 7 has one row: skipped as query
    loss = fewshot.batch_prototypical_loss(emb, labels, metric)
    torch.testing.assert_close(loss, brute_force_batch_loss(emb, labels, metric))
    loss.backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_batch_loss_is_zero_without_a_usable_episode():
    emb = torch.randn(3, 4, requires_grad=True)
    assert fewshot.batch_prototypical_loss(emb, torch.tensor([0, 0, 0])).item() == 0.0  # one class
    assert fewshot.batch_prototypical_loss(emb, torch.tensor([0, 1, 2])).item() == 0.0  # no pairs


def test_episode_accuracy_and_confidence_intervals():
    labels, tracks = toy_rows()
    emb = np.eye(5, dtype=np.float32)[labels] * 3 + np.random.default_rng(0).normal(0, 0.1, (len(labels), 5))
    ep = fewshot.sample_episode(np.random.default_rng(0), labels, tracks, 5, 1, 5)
    acc, correct = fewshot.episode_accuracy(emb, ep)
    assert acc == 1.0 and correct.shape == (25,)
    lr_acc, _ = fewshot.logistic_regression_accuracy(emb, ep)
    assert lr_acc == 1.0
    m, (lo, hi) = fewshot.mean_ci([0.5, 0.7, 0.6, 0.8])
    assert m == pytest.approx(0.65) and lo < m < hi
    m, (lo, hi), n = fewshot.cluster_ci({"a": [1, 1, 0], "b": [1, 0, 0], "c": [1, 1, 1]})
    assert n == 3 and m == pytest.approx(2 / 3) and lo < m < hi


def test_centring_changes_cosine_but_not_euclidean_prototypes():
    labels, tracks = toy_rows()
    rng = np.random.default_rng(2)
    emb = np.eye(5, dtype=np.float32)[labels] + 5.0 + rng.normal(0, 0.4, (len(labels), 5)).astype(np.float32)
    eps = fewshot.sample_episodes(40, labels, tracks, 5, 3, 5, seed=0)
    for ep in eps:
        a, _ = fewshot.episode_accuracy(emb, ep)
        b, _ = fewshot.episode_accuracy(emb, ep, centre=True)
        assert a == b  # squared Euclidean distances are translation invariant
    plain = np.mean([fewshot.episode_accuracy(emb, ep, "cosine")[0] for ep in eps])
    centred = np.mean([fewshot.episode_accuracy(emb, ep, "cosine", centre=True)[0] for ep in eps])
    assert centred > plain  # a large common offset hides the class directions from cosine


# -- learned feature weights ------------------------------------------------------------------------


def test_feature_weights_favour_features_that_separate_genres():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    z = rng.normal(size=(200, 3))
    z[:, 0] += 3 * labels  # separates genres
    z[:, 2] *= 4  # varies a lot inside every genre, no genre signal (z-scored: like feature 1)
    z = (z - z.mean(0)) / z.std(0)
    w = fewshot.feature_weights(z, labels)
    assert w.shape == (3,) and w.dtype == np.float32
    assert w[0] > 5 and w[1] < 0.3 and w[2] < 0.3  # noise: (between ~ 0 + eps) / (within ~ 1 + eps)
    np.testing.assert_allclose(fewshot.feature_weights(z, labels, alpha=2.0), w.astype(np.float64) ** 2, rtol=1e-5)
    np.testing.assert_allclose(fewshot.weighted_features(z, w), z * w)
    t = torch.from_numpy(z).float()
    torch.testing.assert_close(fewshot.weighted_features(t, w), t * torch.from_numpy(w))
    with pytest.raises(ValueError, match=">= 2 genres"):
        fewshot.feature_weights(z, np.zeros(200, dtype=int))


def test_feature_weights_help_prototypes_when_noise_features_dominate():
    """Genres that differ on a few features, new genres on the same ones: weighting recovers them."""
    rng = np.random.default_rng(1)
    labels, tracks = toy_rows(n_classes=10)
    centres = rng.normal(size=(10, 4)) * 1.5
    z = np.concatenate([centres[labels], rng.normal(0, 2.0, (len(labels), 40))], 1)
    z += rng.normal(0, 0.5, z.shape)
    train_rows, test_rows = labels < 5, labels >= 5
    w = fewshot.feature_weights(z[train_rows], labels[train_rows])
    eps = fewshot.sample_episodes(100, labels[test_rows] - 5, tracks[test_rows], 5, 1, 5, seed=0)
    raw = np.mean([fewshot.episode_accuracy(z[test_rows], ep)[0] for ep in eps])
    weighted = np.mean([fewshot.episode_accuracy(z[test_rows] * w, ep)[0] for ep in eps])
    assert weighted > raw + 0.1


# -- add_genre from audio files and the round trip ------------------------------------------------


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory):
    """A tiny model with real feature stats, trained-genre prototypes, and two 10-s WAV files."""
    import soundfile

    from features import extract_windows
    from workbench.synth import generate_clip

    folder = tmp_path_factory.mktemp("fewshot_audio")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        y = generate_clip("rock", rng, duration=10.0)
        paths.append(folder / f"surf{i}.wav")
        soundfile.write(paths[-1], y, 22050)
    feats = np.concatenate([extract_windows(generate_clip(g, rng, duration=5.0)) for g in
                            ("jazz", "blues", "rock", "pop", "classical") for _ in range(2)])
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(**TINY, feature_mean=feats.mean(0), feature_std=feats.std(0) + 1e-3)
    model = MusicGenreMoE(config).eval()
    model.set_genre_prototypes(torch.from_numpy(feats), np.repeat(np.arange(5), 2))
    return model, paths


def test_add_genre_from_audio_files_is_the_mean_window_embedding(audio_model):
    from features import extract_windows, load_audio

    model, paths = audio_model
    proto = model.add_genre("surf", [str(p) for p in paths])
    windows = np.concatenate([extract_windows(load_audio(p)) for p in paths])
    assert len(windows) == 4  # two 10-s files, two 5-s windows each
    expected = model.fewshot_embed(torch.from_numpy(windows)).mean(0)
    np.testing.assert_allclose(proto, expected.numpy(), rtol=1e-5, atol=1e-6)
    r = model.predict(windows[0])
    assert set(r["prototype_scores"]) == {"jazz", "blues", "rock", "pop", "classical", "surf"}
    assert sum(r["prototype_scores"].values()) == pytest.approx(1.0, abs=1e-5)
    song = model.predict_audio(paths[0])
    assert "prototype_scores" in song and song["num_windows"] == 2


def test_add_genre_from_one_waveform_needs_its_rate(audio_model):
    from features import load_audio

    model, paths = audio_model
    y = load_audio(paths[0])
    with pytest.raises(ValueError, match="sampling_rate"):
        model.add_genre("surf_wave", [y])
    proto = model.add_genre("surf_wave", [y], sampling_rate=22050)  # K = 1
    assert len(proto) == model.config.num_features  # the default prototype space: z-scored features


def test_prototypes_survive_save_pretrained_and_from_pretrained(audio_model, tmp_path):
    model, paths = audio_model
    model.add_genre("surf", [str(paths[0])])
    model.save_pretrained(tmp_path)
    loaded = MusicGenreMoE.from_pretrained(tmp_path).eval()
    assert loaded.config.prototypes == model.config.prototypes
    x = np.random.default_rng(3).normal(size=(3, 59)).astype(np.float32)
    a, b = model.predict(x), loaded.predict(x)
    for ra, rb in zip(a, b):
        assert ra["predicted_genre"] == rb["predicted_genre"]
        assert ra["prototype_scores"] == pytest.approx(rb["prototype_scores"], abs=1e-6)


# -- episodic training ----------------------------------------------------------------------------


def test_episodic_flag_adds_the_prototypical_loss():
    s = settings.parse_settings(["--episodic", "--proto-weight", "0.5", "--epochs", "3", "--patience", "5"])
    assert s.episodic and s.proto_weight == 0.5
    assert not settings.parse_settings([]).episodic
    torch.manual_seed(0)
    x = torch.randn(80, 59)
    y = torch.arange(80) % 5
    x[:, :5] += 2 * F.one_hot(y, 5)  # a learnable signal
    model = MusicGenreMoE(MusicGenreMoEConfig(**TINY, feature_mean=np.zeros(59), feature_std=np.ones(59)))
    history, best_epoch = training.fit(model, (x[:60], y[:60]), (x[60:], y[60:]), s, log=lambda *_: None)
    assert len(history["train_proto_loss"]) == 3 and 1 <= best_epoch <= 3
    assert all(np.isfinite(history["val_proto_loss"]))
    # the logged loss is the model's loss plus the weighted prototypical term
    model.eval()
    terms = training.run_epoch(model, x[60:], y[60:], batch_size=512, proto_weight=0.5)
    out = model(x[60:], labels=y[60:])
    proto = fewshot.batch_prototypical_loss(out.embedding, y[60:])
    assert terms["loss"] == pytest.approx((out.loss + 0.5 * proto).item(), rel=1e-5)


# -- the few-shot space in the model (config.prototype_space) --------------------------------------


@pytest.mark.parametrize("space", ["features", "embedding"])
def test_prototype_space_is_used_by_add_genre_and_survives_save(space, tmp_path):
    rng = np.random.default_rng(4)
    raw = rng.normal(2.0, 3.0, size=(40, 59)).astype(np.float32)
    mean, std = raw.mean(0), raw.std(0)
    labels = np.arange(40) % 5
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(**TINY, feature_mean=mean, feature_std=std, prototype_space=space)
    model = MusicGenreMoE(config).eval()
    z = torch.from_numpy((raw - mean) / std)
    expected = z if space == "features" else model.embed(raw)
    torch.testing.assert_close(model.fewshot_embed(torch.from_numpy(raw)), expected,
                               rtol=1e-4, atol=1e-4)
    model.set_genre_prototypes(torch.from_numpy(raw), labels)
    proto = model.add_genre("new", raw[:3])
    np.testing.assert_allclose(proto, expected[:3].mean(0).numpy(), rtol=1e-4, atol=1e-4)
    r = model.predict(raw[:3].mean(0))
    if space == "features":  # the mean of the examples sits nearest their own prototype
        assert max(r["prototype_scores"], key=r["prototype_scores"].get) == "new"
    model.save_pretrained(tmp_path)
    loaded = MusicGenreMoE.from_pretrained(tmp_path).eval()
    assert loaded.config.prototype_space == space
    assert loaded.predict(raw[:3].mean(0))["prototype_scores"] == pytest.approx(
        r["prototype_scores"], abs=1e-6)


def test_unknown_prototype_space_is_an_error():
    with pytest.raises(ValueError, match="prototype_space must be one of 'features', 'frontend', 'frontend_raw', "
                                         "'embedding', got 'raw'"):
        MusicGenreMoEConfig(**TINY, prototype_space="raw")


def test_prototypes_of_the_wrong_width_for_their_space_are_an_error():
    with pytest.raises(ValueError, match=r"prototype_space 'features' must have 59 values, got \{'surf': 32\}"):
        MusicGenreMoEConfig(**TINY, prototypes={"surf": [0.0] * 32})


# -- the prototype metric (config.prototype_metric, prototypes.py) --------------------------------


def test_prototype_scores_known_answers():
    from prototypes import COSINE_SCALE, prototype_scores

    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    protos = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(prototype_scores(q, protos), -torch.tensor([[4.0, 1.0], [13.0, 2.0]]))
    torch.testing.assert_close(prototype_scores(q, protos, "euclidean"), -torch.tensor([[4.0, 1.0], [13.0, 2.0]]))
    r = 2 ** -0.5  # cos 45 degrees; lengths do not matter
    torch.testing.assert_close(prototype_scores(q, protos, "cosine"), COSINE_SCALE * torch.tensor([[1.0, r], [0.0, r]]))
    torch.testing.assert_close(prototype_scores(q, protos, "cosine", scale=1.0), torch.tensor([[1.0, r], [0.0, r]]))
    assert COSINE_SCALE == 10.0  # the value fewshot.py's prototypical loss has always used


def test_cosine_prototype_is_the_mean_of_unit_vectors():
    from prototypes import class_prototypes, metric_space

    emb = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-5.0, 0.0]])
    protos = class_prototypes(metric_space(emb, "cosine"), [0, 0, 1], 2)
    torch.testing.assert_close(protos, torch.tensor([[0.3, 0.9], [-1.0, 0.0]]))
    torch.testing.assert_close(metric_space(emb, "euclidean"), emb)


def test_unknown_metric_is_an_error_naming_expected_and_received():
    from prototypes import prototype_scores

    with pytest.raises(ValueError, match="metric must be one of 'euclidean', 'cosine', got 'manhattan'"):
        prototype_scores(torch.zeros(1, 2), torch.zeros(1, 2), "manhattan")
    with pytest.raises(ValueError, match="prototype_metric must be one of 'euclidean', 'cosine', got 'manhattan'"):
        MusicGenreMoEConfig(**TINY, prototype_metric="manhattan")
    with pytest.raises(ValueError, match="prototype_space 'frontend_raw' needs a front end"):
        MusicGenreMoEConfig(**TINY, prototype_space="frontend_raw")


def test_config_without_prototype_metric_loads_as_euclidean(tmp_path):
    """Configs saved before prototype_metric existed keep scoring by Euclidean distance."""
    import json

    config = MusicGenreMoEConfig(**TINY, prototype_metric="cosine")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["prototype_metric"] == "cosine"
    del saved["prototype_metric"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert MusicGenreMoEConfig.from_pretrained(tmp_path).prototype_metric == "euclidean"
    assert MusicGenreMoEConfig().prototype_metric == "euclidean"


def test_cosine_add_genre_survives_save_pretrained_and_from_pretrained(tmp_path):
    from prototypes import COSINE_SCALE

    rng = np.random.default_rng(6)
    raw = rng.normal(2.0, 3.0, size=(40, 59)).astype(np.float32)
    mean, std = raw.mean(0), raw.std(0)
    torch.manual_seed(0)
    model = MusicGenreMoE(MusicGenreMoEConfig(**TINY, feature_mean=mean, feature_std=std,
                                              prototype_metric="cosine")).eval()
    z = F.normalize(torch.from_numpy((raw - mean) / std), dim=1)  # "features" space, L2-normalised
    torch.testing.assert_close(model.fewshot_embed(raw), z, rtol=1e-4, atol=1e-5)
    model.set_genre_prototypes(torch.from_numpy(raw), np.arange(40) % 5)
    proto = model.add_genre("new", raw[:3])
    np.testing.assert_allclose(proto, z[:3].mean(0).numpy(), rtol=1e-4, atol=1e-5)  # mean of unit vectors
    np.testing.assert_allclose(model.config.prototypes["jazz"], z[0::5].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    r = model.predict(raw[0])
    names = list(model.config.prototypes)
    protos = torch.tensor([model.config.prototypes[n] for n in names])
    expected = (COSINE_SCALE * z[:1] @ F.normalize(protos, dim=1).T).softmax(-1)[0]
    assert r["prototype_scores"] == pytest.approx(dict(zip(names, expected.tolist())), abs=1e-5)
    model.save_pretrained(tmp_path)
    loaded = MusicGenreMoE.from_pretrained(tmp_path).eval()
    assert loaded.config.prototype_metric == "cosine" and loaded.config.prototypes == model.config.prototypes
    for ra, rb in zip(model.predict(raw[:4]), loaded.predict(raw[:4])):
        assert ra["predicted_genre"] == rb["predicted_genre"]
        assert ra["prototype_scores"] == pytest.approx(rb["prototype_scores"], abs=1e-6)


def test_frontend_raw_space_is_the_embedding_not_z_scored(tmp_path):
    """prototype_space "frontend_raw" + cosine: the development choice ("musicnn l2" in fewshot_eval)."""
    rng = np.random.default_rng(7)
    raw = np.abs(rng.normal(1.0, 2.0, size=(20, 259))).astype(np.float32)
    raw[:, 59:109] += 4 * np.repeat(np.eye(5, dtype=np.float32), 10, axis=1)[np.arange(20) % 5]
    mean, std = raw.mean(0), raw.std(0)
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(**TINY, frontend="musicnn", feature_mean=mean, feature_std=std,
                                 prototype_space="frontend_raw", prototype_metric="cosine")
    model = MusicGenreMoE(config).eval()
    expected = F.normalize(torch.from_numpy(raw[:, 59:]), dim=1)
    torch.testing.assert_close(model.fewshot_embed(raw), expected, rtol=1e-4, atol=1e-5)
    model.set_genre_prototypes(torch.from_numpy(raw[5:]), np.arange(5, 20) % 5)
    proto = model.add_genre("new", raw[:2])
    assert len(proto) == 200
    np.testing.assert_allclose(proto, expected[:2].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    nearest = [max(r["prototype_scores"], key=r["prototype_scores"].get) for r in model.predict(raw[:5])]
    assert nearest == ["new", "new", "rock", "pop", "classical"]  # the embedding units that mark each class
    model.save_pretrained(tmp_path)
    loaded = MusicGenreMoE.from_pretrained(tmp_path).eval()
    assert (loaded.config.prototype_space, loaded.config.prototype_metric) == ("frontend_raw", "cosine")
    assert loaded.predict(raw[0])["prototype_scores"] == pytest.approx(model.predict(raw[0])["prototype_scores"],
                                                                        abs=1e-6)


def test_train_flag_and_front_end_defaults_for_the_prototype_metric():
    s = settings.parse_settings([])
    assert (s.model["prototype_space"], s.model["prototype_metric"]) == ("features", "euclidean")
    s = settings.parse_settings(["--frontend", "musicnn"])
    assert (s.model["prototype_space"], s.model["prototype_metric"]) == ("frontend_raw", "cosine")
    s = settings.parse_settings(["--data-dir", "x"])  # real data: musicnn (settings.REAL_DATA), so its few-shot space
    assert (s.model["frontend"], s.model["prototype_metric"]) == ("musicnn", "cosine")
    s = settings.parse_settings(["--data-dir", "x", "--frontend", "none"])
    assert (s.model["prototype_space"], s.model["prototype_metric"]) == ("features", "euclidean")
    s = settings.parse_settings(["--frontend", "musicnn", "--prototype-metric", "euclidean",
                              "--prototype-space", "features"])  # given flags win
    assert (s.model["prototype_space"], s.model["prototype_metric"]) == ("features", "euclidean")
    assert settings.parse_settings(["--prototype-metric", "cosine"]).model["prototype_metric"] == "cosine"
    with pytest.raises(SystemExit):
        settings.parse_settings(["--prototype-metric", "manhattan"])


# -- benchmarks/fewshot_eval.py (musicnn spaces, paired differences) and benchmarks/conv_kan.py ----------


def _bench(name):
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


def test_fewshot_eval_musicnn_spaces_and_paired_differences():
    fe = _bench("fewshot_eval")
    labels, tracks = toy_rows()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(len(labels), 259)).astype(np.float32)
    x[:, 59:109] += 3 * np.repeat(np.eye(5, dtype=np.float32), 10, axis=1)[labels]  # the "embedding" knows the classes
    x[:, 59:] = np.abs(x[:, 59:])  # ReLU-like units
    methods, z_tr, z_te, _ = fe.feature_methods(x, labels, x, frontend="musicnn")
    assert {"raw euclidean", "raw logreg", fe.MUSICNN_PRIMARY, "musicnn l2 (cosine, not z-scored)",
            "concat euclidean", "concat logreg"} <= set(methods)
    assert z_te.shape == (len(labels), 59) and methods["concat euclidean"][0][0].shape == (len(labels), 259)
    mean, std = feature_stats(x[:, 59:])
    np.testing.assert_allclose(methods["musicnn euclidean"][0][0].numpy(), (x[:, 59:] - mean) / std, rtol=1e-5, atol=1e-5)
    episodes = fe.draw_episodes(labels, tracks, 5, 2, 3, 20, "window")
    keep = {n: methods[n] for n in ("raw euclidean", "musicnn euclidean", fe.MUSICNN_PRIMARY, "musicnn logreg")}
    scored = fe.score_methods(keep, z_te.numpy(), episodes, tracks, log=lambda *_: None)
    rows = fe.summarise(scored)
    assert rows["musicnn euclidean"]["accuracy"] > rows["raw euclidean"]["accuracy"] + 0.3
    d = rows["musicnn euclidean"]
    assert d["minus_baseline"] == pytest.approx(d["accuracy"] - rows["raw euclidean"]["accuracy"])
    lo, hi = d["minus_baseline_recording_ci95"]
    assert lo <= d["minus_baseline"] <= hi and "minus_baseline" not in rows["raw euclidean"]
    assert "| musicnn l2 (cosine, not z-scored) (primary) |" in fe.table({2: rows}, [2])
    assert "musicnn logreg" in fe.difference_table({2: rows}, [2])
    # recording shots: whole recordings in the prototype
    ep = fe.draw_episodes(labels, tracks, 5, 2, 3, 1, "recording")[0]
    assert len(ep.support) == 5 * 2 * 6
    # the model's own path (training.build_model + add_genre + its prototype scores), train.py's musicnn
    # default, scores exactly as the "musicnn l2" row
    model = fe.model_path_model(x, ["a", "b", "c", "d", "e"], "musicnn")
    assert (model.config.prototype_space, model.config.prototype_metric) == ("frontend_raw", "cosine")
    scored = fe.score_methods({"model": ("model", model, torch.from_numpy(x)), "l2": methods[fe.MUSICNN_PRIMARY]},
                              z_te.numpy(), episodes, tracks, log=lambda *_: None)
    np.testing.assert_array_equal(scored["model"][0], scored["l2"][0])
    assert fe.parse_args(["d", "--frontend", "musicnn"]).model_path == "default"
    assert fe.parse_args(["d"]).model_path == "" and fe.parse_args(["d"]).clip_seconds == 5.0


def test_kan_conv_is_a_kan_layer_on_unfolded_neighbourhoods():
    ck = _bench("conv_kan")
    torch.manual_seed(0)
    conv = ck.KANConv2d(2, 3, 3)
    x = torch.randn(2, 2, 5, 4)
    out = conv(x)
    assert out.shape == (2, 3, 5, 4)
    cols = F.unfold(x, 3, padding=1)  # (2, 18, 20)
    torch.testing.assert_close(out[1, :, 2, 1], conv.kan(cols[1, :, 2 * 4 + 1]))


def test_conv_kan_has_the_cnns_layers_with_kan_convolutions():
    ck = _bench("conv_kan")
    cnn, kan = ck.ConvEmbedder("cnn", (2, 4), 6), ck.ConvEmbedder("kan", (2, 4), 6)
    cnn_types = [type(m).__name__ for m in cnn.blocks if not isinstance(m, torch.nn.ReLU)]
    assert [type(m).__name__ for m in kan.blocks] == [t.replace("Conv2d", "KANConv2d") for t in cnn_types]
    assert type(cnn.head).__name__ == "Linear" and type(kan.head).__name__ == "KANLinear"
    assert cnn(torch.zeros(2, 187, 96)).shape == kan(torch.zeros(2, 187, 96)).shape == (2, 6)


@pytest.mark.parametrize("kind", ["cnn", "kan"])
def test_conv_embedders_learn_with_the_prototypical_loss(kind):
    ck = _bench("conv_kan")
    rng = np.random.default_rng(0)
    mels = [rng.normal(1.0, 2.0, (200 + 10 * i, 96)).astype(np.float32) for i in range(6)]
    for i in (0, 2, 4):
        mels[i][:, :24] += 6.0  # genre 0: loud low bands
    mel_labels = np.array([0, 1, 0, 1, 0, 1])
    x, y = ck.sample_batch(rng, mels, mel_labels, 2, 3)
    assert x.shape == (6, 187, 96) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    args = ck.parse_args(["dir", "--steps", "15", "--channels", "2,4", "--embedding", "6", "--lr", "1e-2",
                          "--batch-way", "2", "--batch-shot", "3"])
    trained, _ = ck.train_embedder(kind, mels, mel_labels, args, 0, (1.0, 2.0), log=lambda *_: None)
    emb = ck.embed(trained, np.stack([m[:187] for m in mels]))
    assert emb.shape == (6, 6) and torch.isfinite(emb).all()
    assert fewshot.batch_prototypical_loss(emb, torch.from_numpy(mel_labels)).item() < 0.5


def test_conv_kan_windows_are_the_extracted_windows():
    ck = _bench("conv_kan")
    from features import extract_windows

    sr = 22050
    y = np.random.default_rng(0).normal(0, 0.1, int(12.6 * sr)).astype(np.float32)  # 2 windows + an end-aligned tail
    _, starts = extract_windows(y, sr, 5.0, return_starts=True)
    wins = ck.window_audio(y, starts, sr, 5.0)
    assert len(wins) == len(starts) == 3
    for w, s in zip(wins, starts):
        np.testing.assert_array_equal(w, y[s:s + 5 * sr])
