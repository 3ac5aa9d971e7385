"""KAN experts inside the whole model: config wiring, regulariser in the loss, save/load round trips
(save_pretrained, train.py checkpoint, Hub export loaded with trust_remote_code) for both bases."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from configuration import MusicGenreMoEConfig
from kan import KANLinear
from modeling import MusicGenreMoE
from workbench import hub_export  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=16, expert_hidden_size=8, expert_output_size=4, gate_hidden_sizes=[8, 8],
            classifier_hidden_size=8)


def kan_model(**kw):
    torch.manual_seed(0)
    config = MusicGenreMoEConfig(**TINY, expert_type="kan", feature_mean=np.zeros(59), feature_std=np.ones(59), **kw)
    model = MusicGenreMoE(config)
    with torch.no_grad():  # move the spline weights off their init so a lost tensor would show
        for m in model.modules():
            if isinstance(m, KANLinear):
                m.spline_weight.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("kw", [{}, {"kan_basis": "rbf"}, {"kan_grid_size": 3, "kan_spline_order": 2}])
def test_config_reaches_every_expert_layer(kw):
    model = kan_model(**kw)
    kans = [m for m in model.modules() if isinstance(m, KANLinear)]
    assert len(kans) == 5 * model.config.num_expert_blocks * 2  # fc1 and fc2 of every block of every expert
    for m in kans:
        assert m.basis == kw.get("kan_basis", "bspline")
        assert m.grid_size == kw.get("kan_grid_size", 5) and m.spline_order == kw.get("kan_spline_order", 3)
    assert not any(isinstance(m, KANLinear) for m in MusicGenreMoE(MusicGenreMoEConfig(**TINY)).modules())


def test_bad_kan_basis_is_rejected():
    with pytest.raises(ValueError, match="kan_basis must be 'bspline' or 'rbf', got 'cubic'"):
        MusicGenreMoEConfig(expert_type="kan", kan_basis="cubic")


def test_regulariser_is_summed_into_the_loss_and_trains():
    model = kan_model()
    model.train()
    x, y = torch.randn(16, 59), torch.arange(16) % 5
    out = model(x, labels=y)
    reg = sum(m.regularization_loss() for m in model.modules() if isinstance(m, KANLinear))
    torch.testing.assert_close(out.kan_reg_loss, reg)
    # The total is exactly the weighted sum of its terms, the KAN regulariser at its config weight
    # (same forward pass: gate noise cannot make the two sides differ).
    c = model.config
    assert c.kan_reg_weight > 0 and out.kan_reg_loss.item() > 0
    expected = (out.ce_loss + c.load_balance_weight * out.load_balance_loss + c.entropy_weight * out.entropy_loss
                + c.routing_weight * out.routing_loss + c.kan_reg_weight * out.kan_reg_loss)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    spline_grads = [m.spline_weight.grad for m in model.modules() if isinstance(m, KANLinear)]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in spline_grads)


@pytest.mark.parametrize("basis", ["bspline", "rbf"])
def test_save_pretrained_round_trip_keeps_grid_and_splines(basis, tmp_path):
    model = kan_model(kan_basis=basis)
    model.config.prototypes = {"surf": [0.5] * 59}  # z-scored feature space
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["expert_type"] == "kan" and saved["kan_basis"] == basis
    loaded = MusicGenreMoE.from_pretrained(tmp_path).eval()
    state, reloaded = model.state_dict(), loaded.state_dict()
    assert set(state) == set(reloaded) and any(k.endswith(".grid") for k in state)
    for k in state:
        torch.testing.assert_close(state[k], reloaded[k], rtol=0, atol=0)
    x = torch.randn(6, 59)
    torch.testing.assert_close(model(x).logits, loaded(x).logits, rtol=0, atol=0)
    assert loaded.config.prototypes == {"surf": [0.5] * 59}


def test_checkpoint_round_trip_through_load_moe_model(tmp_path):
    from modeling import load_moe_model

    model = kan_model()
    path = tmp_path / "moe_genre_checkpoint.pt"
    torch.save({"model_state_dict": model.state_dict(), "config": model.config.to_dict()}, path)
    loaded, mean, std, genres = load_moe_model(str(path))
    x = torch.randn(4, 59)
    torch.testing.assert_close(model(x).logits, loaded(x).logits, rtol=0, atol=0)
    assert loaded.config.expert_type == "kan" and genres == model.config.genres


def test_hub_export_loads_with_remote_code(tmp_path, monkeypatch):
    """The export path (save_pretrained writes the code files) and AutoModel with trust_remote_code,
    in this process: the dynamic module must bring kan.py along for KAN experts."""
    from transformers import AutoModel

    model = kan_model(kan_basis="rbf")
    folder = tmp_path / "export"
    hub_export.write_model_folder(model, folder)
    assert "kan.py" in hub_export.code_files() and (folder / "kan.py").is_file()
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(loaded).__module__ != MusicGenreMoE.__module__  # the exported copy, not the checkout's
    assert any(type(m).__name__ == "KANLinear" and m.basis == "rbf" for m in loaded.modules())
    x = torch.randn(5, 59)
    torch.testing.assert_close(model(x).logits, loaded(x).logits, rtol=0, atol=0)
    r = loaded.predict(x[0].numpy())
    assert r["predicted_genre"] in model.config.genres
