"""Fixtures shared by the whole suite: one quick trained model for every file that needs one."""

import pytest


@pytest.fixture(scope="session")
def quick_training(tmp_path_factory):
    """(run folder, metrics) of one real `python train.py --quick` run, trained once per session."""
    import train

    out = tmp_path_factory.mktemp("quick_run")
    metrics = train.main(["--quick", "--out", str(out), "--cache-dir", "none"], log=lambda *a, **k: None)
    return out, metrics


@pytest.fixture(scope="session")
def quick_run(quick_training):
    """The quick run's folder (hf_model/, the seed's checkpoint, metrics.json, figures)."""
    return quick_training[0]
