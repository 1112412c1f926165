"""The probes in the training loop handle multi-label data (probekit's multi-label probes, by
mAP), the samplers draw each epoch from the generator their docstrings name, and tuner's
docstrings stand on their own."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from probekit import dual_probe  # noqa: E402
from tuner.embed import embed  # noqa: E402
from tuner.sampling import MPerClassSampler, ShuffledBatches  # noqa: E402
from tuner.train import TrainConfig, fit, probe_backend  # noqa: E402

QUIET = {"progress": False, "verbose": False, "device": "cpu"}
TUNER = Path(__file__).resolve().parents[1] / "src" / "tuner"


def tagged_rows(n, seed=0):
    """Rows carrying one or two of six tags, their tag signal buried in noise."""
    rng = np.random.default_rng(seed)
    hot = np.zeros((n, 6), np.float32)
    hot[np.arange(n), np.arange(n) % 6] = 1.0
    hot[np.arange(0, n, 3), (np.arange(0, n, 3) + 2) % 6] = 1.0
    centres = rng.normal(size=(6, 8))
    X = np.hstack([hot @ centres + 0.3 * rng.normal(size=(n, 8)), rng.normal(size=(n, 24))])
    return X.astype(np.float32), hot


def encoder():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 8))


def test_multilabel_data_is_probed_by_map_and_picks_the_best_checkpoint(tmp_path, capsys):
    X, hot = tagged_rows(240)
    config = TrainConfig(objective="jaccard", epochs=2, batch_size=32, lr=3e-3,
                         probe_metric="knn_weighted@10", progress=False, verbose=True,
                         device="cpu")
    model = encoder()
    result = fit(model, (X[:180], hot[:180]), (X[180:], hot[180:]), config, out_dir=tmp_path)
    scores = [record["probe"] for record in result.history]
    assert all(set(s) == {"knn_weighted@1", "knn_weighted@5", "knn_weighted@10",
                          "knn_weighted@20", "linear"} for s in scores)
    assert result.best_score == max(s["knn_weighted@10"] for s in scores)
    assert (tmp_path / "best.pt").exists()
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["best"]["measure"] == "map" and log["best"]["score"] == result.best_score
    assert "knn_weighted@10 mAP" in capsys.readouterr().err
    # the score is probekit's multi-label probe of the restored best model's embeddings
    report = dual_probe(embed(model, X[:180], device="cpu"), hot[:180],
                        X_test=embed(model, X[180:], device="cpu"), y_test=hot[180:],
                        k=(1, 5, 10, 20), n_bootstrap=10, geometry=False,
                        backend=probe_backend(torch.device("cpu")))
    assert report.knn["weighted"]["10"]["map"] == pytest.approx(result.best_score)


def test_multilabel_probe_settings_that_cannot_work_fail_before_training():
    X, hot = tagged_rows(60)
    quick = {"objective": "jaccard", "epochs": 1, "batch_size": 20, **QUIET}
    with pytest.raises(ValueError, match="single-label only"):
        fit(encoder(), (X, hot), (X, hot), TrainConfig(probe_metric="knn_majority@5", **quick))
    no_shared_tag = hot.copy()
    no_shared_tag[:, 5] = 0.0
    only_tag_5 = np.zeros_like(hot)
    only_tag_5[:, 5] = 1.0
    with pytest.raises(ValueError, match="no tag of the validation set occurs"):
        fit(encoder(), (X, no_shared_tag), (X, only_tag_5), TrainConfig(**quick))
    with pytest.raises(ValueError, match="needs at least 60 training rows"):
        fit(encoder(), (X, hot), (X, hot), TrainConfig(probe_metric="knn_weighted@60", **quick))


@pytest.mark.parametrize("make", [
    lambda seed: MPerClassSampler(np.arange(40) % 5, m=4, batch_size=8, seed=seed),
    lambda seed: ShuffledBatches(40, 8, seed=seed),
])
def test_each_epoch_draws_from_the_seed_epoch_pair(make):
    """Epoch e of seed s uses default_rng([s, e]), not s + e: epoch 1 of seed 0 differs from
    epoch 0 of seed 1, and the first permutation is that generator's."""
    first, second = make(0), make(1)
    first.set_epoch(1)
    assert list(first) != list(second)
    sampler = make(3)
    sampler.set_epoch(2)
    if isinstance(sampler, ShuffledBatches):
        expected = np.random.default_rng([3, 2]).permutation(40)[:8].tolist()
        assert next(iter(sampler)) == expected


def test_tuner_docstrings_cite_no_outside_documents():
    pattern = re.compile(r"DESIGN\.md|geometry-reference|\bissues? #?\d+", re.IGNORECASE)
    for path in sorted(TUNER.glob("*.py")):
        assert not pattern.search(path.read_text()), path.name
    assert "single-label" not in (TUNER / "train.py").read_text().split(
        "probing = val_set")[1].split("\n")[0]
