"""The model on its own: shapes, each loss term, input checks, save/load, top-k gating, KAN experts."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from configuration import DEFAULT_GENRES, MusicGenreMoEConfig
from modeling import MusicGenreMoE, gate_entropy_loss, load_balance_loss, routing_loss

TINY = dict(hidden_size=16, expert_hidden_size=8, expert_output_size=4, gate_hidden_sizes=[8, 8],
            classifier_hidden_size=8)


def tiny(**kw):
    """A small model with identity stats (mean 0, std 1), so raw features equal z-scores."""
    torch.manual_seed(0)
    kw = {"feature_mean": np.zeros(59), "feature_std": np.ones(59)} | kw
    return MusicGenreMoE(MusicGenreMoEConfig(**TINY, **kw))


def test_default_architecture_matches_the_seed():
    model = MusicGenreMoE(MusicGenreMoEConfig())
    assert sum(p.numel() for p in model.parameters()) == 174_570  # the seed says ~175k
    assert len(model.experts) == 5
    assert model.config.genres == list(DEFAULT_GENRES)


def test_forward_shapes_and_no_loss_without_labels():
    model = tiny()
    out = model(torch.randn(7, 59))
    assert out.logits.shape == (7, 5) and out.gate_weights.shape == (7, 5) and out.embedding.shape == (7, 4)
    assert out.loss is None and out.ce_loss is None
    torch.testing.assert_close(out.gate_weights.sum(-1), torch.ones(7))


def test_loss_is_the_weighted_sum_of_named_terms():
    model = tiny(routing_weight=0.7, load_balance_weight=0.05, entropy_weight=0.01)
    x, y = torch.randn(16, 59), torch.randint(0, 5, (16,))
    model.eval()
    out = model(x, labels=y)
    c = model.config
    expected = (out.ce_loss + c.load_balance_weight * out.load_balance_loss + c.entropy_weight * out.entropy_loss
                + c.routing_weight * out.routing_loss + c.kan_reg_weight * out.kan_reg_loss)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.ce_loss, F.cross_entropy(out.logits, y, label_smoothing=0.1))
    assert out.kan_reg_loss.item() == 0.0  # MLP experts


def test_load_balance_is_one_when_uniform_and_five_when_collapsed():
    uniform = torch.full((10, 5), 0.2)
    assert load_balance_loss(uniform).item() == pytest.approx(1.0)
    collapsed = F.one_hot(torch.zeros(10, dtype=torch.long), 5).float()
    assert load_balance_loss(collapsed).item() == pytest.approx(5.0)


def test_entropy_term_is_minus_entropy():
    w = torch.full((3, 5), 0.2)
    assert gate_entropy_loss(w, w.log()).item() == pytest.approx(-math.log(5))
    one_hot = F.one_hot(torch.tensor([1, 2, 3]), 5).float()
    assert gate_entropy_loss(one_hot, one_hot.clamp_min(1e-30).log()).item() == pytest.approx(0.0, abs=1e-6)


def test_routing_term_is_low_only_when_the_label_expert_is_chosen():
    labels = torch.tensor([0, 3])
    right = torch.log(torch.tensor([[0.96, 0.01, 0.01, 0.01, 0.01], [0.01, 0.01, 0.01, 0.96, 0.01]]))
    wrong = right.flip(0)
    assert routing_loss(right, labels).item() == pytest.approx(-math.log(0.96), rel=1e-5)
    assert routing_loss(wrong, labels).item() > 4


def test_gate_noise_only_in_training():
    model = tiny(gate_noise_std=1.0)
    x = torch.randn(4, 59)
    model.eval()
    torch.testing.assert_close(model(x).gate_weights, model(x).gate_weights)
    model.train()
    assert not torch.allclose(model(x).gate_weights, model(x).gate_weights)


def test_top_k_gating_keeps_k_experts():
    model = tiny(num_experts_per_tok=2)
    model.eval()
    g = model(torch.randn(9, 59)).gate_weights
    assert ((g > 0).sum(-1) == 2).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(9))


@pytest.mark.parametrize("bad,match", [
    (torch.randn(3, 58), r"expected shape \(59,\) or \(batch, 59\), got \(3, 58\)"),
    (torch.randn(2, 3, 59), r"got \(2, 3, 59\)"),
])
def test_forward_rejects_wrong_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny()(bad)


def test_forward_and_predict_reject_nan():
    x = torch.randn(4, 59)
    x[2, 10] = float("nan")
    with pytest.raises(ValueError, match=r"expected finite values, got nan at row 2, feature 10"):
        tiny()(x)
    with pytest.raises(ValueError, match="finite"):
        tiny().predict(x)


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match=r"labels: expected genre indices in \[0, 4\], got 7"):
        tiny()(torch.randn(2, 59), labels=torch.tensor([0, 7]))


def test_predict_single_and_batch_and_list():
    model = tiny()
    model.train()
    one = model.predict(np.zeros(59, dtype=np.float32))
    assert set(one) == {"predicted_genre", "confidence", "probabilities", "gate_weights"}
    assert list(one["probabilities"]) == list(DEFAULT_GENRES)
    assert one["confidence"] == max(one["probabilities"].values())
    assert not model.training  # predict leaves the model in eval mode
    batch = model.predict([[0.0] * 59, [1.0] * 59])
    assert isinstance(batch, list) and len(batch) == 2
    with pytest.raises(ValueError, match=r"expected shape \(59,\) or \(batch, 59\), got \(1, 3\)"):
        model.predict([1.0, 2.0, 3.0])


def test_the_model_always_normalises_with_its_own_stats():
    untrained = tiny(feature_mean=None, feature_std=None)
    for call in (untrained, untrained.predict):
        with pytest.raises(ValueError, match="no feature_mean/feature_std"):
            call(np.zeros((1, 59), np.float32))
    stats = tiny(feature_mean=np.arange(59.0), feature_std=np.full(59, 2.0))
    identity = tiny()  # same weights (same seed), mean 0 and std 1
    raw = np.arange(59.0) + 2.0
    a = stats.predict(raw)["probabilities"]
    b = identity.predict(np.ones(59))["probabilities"]  # the z-scores of raw under `stats`
    assert a == pytest.approx(b)
    stats.eval(), identity.eval()
    torch.testing.assert_close(stats(torch.tensor(raw[None], dtype=torch.float32)).logits,
                               identity(torch.ones(1, 59)).logits)
    with pytest.raises(TypeError, match="already_normalised"):  # the old flag is gone, not ignored
        stats(torch.ones(1, 59), already_normalised=True)


@pytest.mark.parametrize("field,values,match", [
    ("feature_mean", [0.0] * 3, "feature_mean must hold 59 values"),
    ("feature_std", [1.0] * 58 + [0.0], r"feature_std\[58\] must be finite and > 0, got 0.0"),
    ("feature_std", [1.0] * 58 + [-2.0], r"feature_std\[58\] must be finite and > 0, got -2.0"),
    ("feature_mean", [0.0] * 58 + [float("nan")], r"feature_mean\[58\] must be finite, got nan"),
    ("feature_std", [1.0] * 58 + [float("inf")], r"feature_std\[58\] must be finite and > 0, got inf"),
])
def test_config_rejects_bad_stats_when_built_and_loaded(tmp_path, field, values, match):
    with pytest.raises(ValueError, match=match):
        MusicGenreMoEConfig(**{field: values})
    good = tiny()
    good.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = values
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        MusicGenreMoE.from_pretrained(tmp_path)


def test_extreme_features_are_refused_naming_row_and_feature():
    model = tiny()
    x = np.zeros((3, 59), np.float32)
    x[1, 57] = 1e30
    for call in (model, model.predict):
        with pytest.raises(ValueError, match=r"row 1, feature 57 \(tempo\) is 1e\+30"):
            call(x)
    x[1, 57] = 50.0  # far out but plausible: still a finite answer
    assert np.isfinite(list(model.predict(x)[1]["probabilities"].values())).all()


def test_save_pretrained_round_trip(tmp_path):
    model = tiny(feature_mean=np.zeros(59), feature_std=np.ones(59))
    model.config.prototypes = {"jazz": [0.0] * 59}  # z-scored feature space
    model.save_pretrained(tmp_path)
    loaded = MusicGenreMoE.from_pretrained(tmp_path)
    x = torch.randn(5, 59)
    model.eval(), loaded.eval()
    torch.testing.assert_close(model(x).logits, loaded(x).logits, rtol=0, atol=0)
    assert loaded.config.feature_std == [1.0] * 59
    assert loaded.config.prototypes == {"jazz": [0.0] * 59}


def test_few_shot_genre_from_feature_vectors():
    model = tiny(feature_mean=np.zeros(59), feature_std=np.ones(59))
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 59)).astype(np.float32)
    model.set_genre_prototypes(torch.from_numpy(train), np.arange(50) % 5)
    new = rng.normal(loc=6.0, size=(3, 59)).astype(np.float32)
    model.add_genre("surf", new)
    r = model.predict(new[0])
    assert "surf" in r["prototype_scores"] and r["predicted_genre"] == "surf"
    with pytest.raises(ValueError, match="already a trained genre"):
        model.add_genre("jazz", new)


@pytest.mark.parametrize("name", ["", None, 123, "../../etc/passwd", "a\n---", " lead", "x" * 65])
def test_add_genre_refuses_bad_names_and_saving_stays_whole(tmp_path, name):
    model = tiny()
    with pytest.raises(ValueError, match="genre name: expected"):
        model.add_genre(name, np.zeros((2, 59), np.float32))
    assert list(model.config.prototypes) == []
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["prototypes"] == {}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left


def test_save_pretrained_is_atomic(tmp_path, monkeypatch):
    model = tiny()
    model.save_pretrained(tmp_path)
    before = (tmp_path / "config.json").read_bytes()
    model.config.prototypes["surf"] = [0.0] * 59
    monkeypatch.setattr(type(model.config), "to_json_string", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").read_bytes() == before  # the old file, not a 0-byte one
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_kan_experts_train_and_regularise():
    model = tiny(expert_type="kan")
    out = model(torch.randn(8, 59), labels=torch.randint(0, 5, (8,)))
    assert out.kan_reg_loss.item() > 0
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
