"""The frozen-embedding adapter (tuner.adapter) and `probekit tune`."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

import probekit  # noqa: E402
from probekit.cli import cli  # noqa: E402
from tuner.adapter import Adapter, AdapterConfig, apply_adapter, train_adapter  # noqa: E402


def buried_classes(n=1200, seed=0):
    """Class signal in 8 dimensions under 56 dimensions of larger noise: cosine kNN on the raw
    rows is poor until the noise is tuned away."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 6
    signal = rng.normal(size=(6, 8))
    X = np.hstack([signal[y] + 0.6 * rng.normal(size=(n, 8)), 3.0 * rng.normal(size=(n, 56))])
    return X.astype(np.float32), y


def test_adapter_starts_as_the_identity():
    adapter = Adapter(5)
    X = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_array_equal(apply_adapter(adapter, X), X)


@pytest.mark.slow
def test_supcon_tuning_improves_knn_on_held_out_rows_and_is_seeded():
    X, y = buried_classes()
    before = probekit.knn_probe(X[:900], y[:900], X[900:], y[900:], k=(10,), n_bootstrap=10)
    adapter, history = train_adapter(X[:900], y[:900], AdapterConfig(epochs=20))
    tuned_train, tuned_test = apply_adapter(adapter, X[:900]), apply_adapter(adapter, X[900:])
    after = probekit.knn_probe(tuned_train, y[:900], tuned_test, y[900:], k=(10,),
                               n_bootstrap=10)
    assert history[-1] < history[0]
    assert after.weighted[10].accuracy > before.weighted[10].accuracy + 0.15
    again, _ = train_adapter(X[:900], y[:900], AdapterConfig(epochs=20))
    np.testing.assert_array_equal(apply_adapter(again, X[900:]), tuned_test)


@pytest.mark.slow
def test_cross_entropy_baseline_trains():
    X, y = buried_classes(600)
    adapter, history = train_adapter(X, y, AdapterConfig(epochs=5, objective="ce"))
    assert history[-1] < history[0]
    with pytest.raises(ValueError, match="objective"):
        train_adapter(X, y, AdapterConfig(objective="triplet"))


@pytest.mark.slow
def test_cli_tune_then_evaluate(tmp_path):
    X, y = buried_classes(600)
    np.save(tmp_path / "train.npy", X[:450])
    np.save(tmp_path / "test.npy", X[450:])
    np.save(tmp_path / "y_train.npy", y[:450])
    np.save(tmp_path / "y_test.npy", y[450:])
    runner = CliRunner()
    result = runner.invoke(cli, ["tune", str(tmp_path / "train.npy"),
                                 str(tmp_path / "y_train.npy"), "--apply",
                                 str(tmp_path / "test.npy"), "--out", str(tmp_path / "tuned"),
                                 "--epochs", "3", "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    tuned = tmp_path / "tuned"
    assert (tuned / "adapter.pt").exists()
    assert json.loads((tuned / "adapter.json").read_text())["config"]["epochs"] == 3
    state = torch.load(tuned / "adapter.pt", weights_only=True)
    assert set(state) >= {"mlp.0.weight", "mlp.2.weight"}
    evaluated = runner.invoke(cli, ["evaluate", str(tuned / "train.tuned.npy"),
                                    str(tmp_path / "y_train.npy"), "--test-embeddings",
                                    str(tuned / "test.tuned.npy"), "--test-labels",
                                    str(tmp_path / "y_test.npy"), "--no-geometry", "-q"])
    assert evaluated.exit_code == 0, (evaluated.output, evaluated.exception)
    assert "| linear |" in evaluated.output
    bad = runner.invoke(cli, ["tune", str(tmp_path / "train.npy"), str(tmp_path / "y_test.npy"),
                              "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error:")
