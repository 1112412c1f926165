"""tuner.train: the loop, its schedule, checkpoints, resume, probes, DDP and the proof it works.

Everything here runs on the CPU, also on a machine with GPUs (``device="cpu"``, gloo process
groups); the CUDA versions are in test_tuner_gpu.py."""

import json
import pickle
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import probekit  # noqa: E402
from tuner.adapter import Adapter  # noqa: E402
from tuner.embed import embed as embed_anywhere  # noqa: E402
from tuner.losses import SupConLoss  # noqa: E402
from tuner.sampling import RankShard, ShuffledBatches  # noqa: E402
from tuner.train import (  # noqa: E402
    TrainConfig,
    fit,
    load_checkpoint,
    load_encoder,
    lr_factor,
    parse_probe_metric,
    probe_backend,
)

CPU = {"progress": False, "verbose": False, "device": "cpu"}


def buried_classes(n, n_classes=8, seed=0, noise=2.5):
    """Class centres in 8 dimensions under 56 dimensions of larger noise, randomly rotated: a
    linear classifier separates the classes, cosine kNN on the raw rows does not."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centres = rng.normal(size=(n_classes, 8))
    X = np.hstack([centres[y] + 0.5 * rng.normal(size=(n, 8)), noise * rng.normal(size=(n, 56))])
    rotation, _ = np.linalg.qr(np.random.default_rng(99).normal(size=(64, 64)))
    return (X @ rotation).astype(np.float32), y


def small_encoder(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 16))


def embed(encoder, data, **options):
    """tuner.embed on the CPU: these tests mean the CPU, also on a machine with a GPU."""
    return embed_anywhere(encoder, data, device="cpu", **options)


def weighted_knn(train_rows, y_train, test_rows, y_test, k=20):
    """probekit's weighted kNN accuracy, searched as the probe of a CPU run searches."""
    result = probekit.knn_probe(train_rows, y_train, test_rows, y_test, k=(k,), n_bootstrap=10,
                                backend=probe_backend(torch.device("cpu")))
    return result.weighted[k].accuracy


def test_learning_rate_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 4, 20) == pytest.approx(0.25)
    assert lr_factor(3, 4, 20) == pytest.approx(1.0)
    assert lr_factor(4, 4, 20) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)
    assert lr_factor(20, 4, 20) == pytest.approx(0.0)
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)


def test_shards_of_a_global_batch_rebuild_it_in_rank_order():
    sampler = ShuffledBatches(10, batch_size=4, batches_per_epoch=5, seed=3)
    batches = list(sampler)
    assert all(len(batch) == 4 for batch in batches)
    flat = sum(batches, [])
    assert sorted(flat[:8]) == sorted(set(flat[:8])) and set(flat[:10]) == set(range(10))
    shards = [list(RankShard(sampler, rank, 2)) for rank in range(2)]
    assert [a + b for a, b in zip(*shards, strict=True)] == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    with pytest.raises(ValueError, match="does not split"):
        list(RankShard(ShuffledBatches(10, 3), 0, 2))


def test_probe_metric_names():
    assert parse_probe_metric("knn_weighted@20") == ("weighted", 20)
    assert parse_probe_metric("knn_majority@5") == ("majority", 5)
    assert parse_probe_metric("linear") == ("linear", None)
    for bad in ("knn@20", "knn_weighted@0", "knn_weighted", "f1"):
        with pytest.raises(ValueError, match="probe_metric"):
            parse_probe_metric(bad)


@pytest.mark.slow
def test_fit_is_seeded_and_resume_continues_the_same_run(tmp_path):
    X, y = buried_classes(400)
    config = TrainConfig(epochs=4, batch_size=32, m=4, lr=3e-3, probe_every=0, **CPU)
    straight = fit(small_encoder(), (X, y), config=config, out_dir=tmp_path / "a")
    again = fit(small_encoder(), (X, y), config=config)
    # a run stopped after two of its four epochs, then resumed from last.pt to the end
    _fit_epochs(small_encoder(), X, y, config, tmp_path / "b", stop_after=2)
    resumed = fit(small_encoder(seed=7), (X, y), config=config, out_dir=tmp_path / "b",
                  resume=True)
    expected = straight.encoder.state_dict()
    for other in (again.encoder, resumed.encoder):
        for name, tensor in other.state_dict().items():
            torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed.history] == pytest.approx(
        [r["loss"] for r in straight.history], rel=1e-12)
    log = json.loads((tmp_path / "a" / "log.json").read_text())
    assert [r["epoch"] for r in log["epochs"]] == [1, 2, 3, 4]
    assert log["config"]["objective"] == "supcon" and log["classes"] == list(range(8))


def _fit_epochs(encoder, X, y, config, out_dir, stop_after, val=None):
    """Run ``fit`` and interrupt it after ``stop_after`` epochs, as a crash would."""

    class Stop(Exception):
        pass

    from tuner import train

    original, calls = train.write_log, []

    def write_then_maybe_stop(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == stop_after:
            raise Stop

    train.write_log = write_then_maybe_stop
    try:
        with pytest.raises(Stop):
            fit(encoder, (X, y), val, config=config, out_dir=out_dir)
    finally:
        train.write_log = original


@pytest.mark.slow
def test_probe_in_the_loop_keeps_the_best_checkpoint_and_restores_it(tmp_path):
    X, y = buried_classes(900)
    config = TrainConfig(epochs=3, batch_size=32, m=4, lr=3e-3, probe_every=1, **CPU)
    result = fit(small_encoder(), (X[:600], y[:600]), (X[600:], y[600:]), config,
                 out_dir=tmp_path)
    probes = [record["probe"] for record in result.history]
    assert all({"knn_weighted@20", "knn_majority@1", "linear"} <= set(p) for p in probes)
    scores = [p["knn_weighted@20"] for p in probes]
    assert result.best_score == max(scores)
    assert result.best_epoch == 1 + scores.index(max(scores))
    # the probe scores are probekit's, on the embeddings of that epoch: recompute the best one
    best = small_encoder(seed=5)
    payload = load_encoder(best, result.best_checkpoint)
    assert payload["epoch"] == result.best_epoch and "optimizer" not in payload
    tuned_train, tuned_val = embed(best, X[:600]), embed(best, X[600:])
    assert weighted_knn(tuned_train, y[:600], tuned_val, y[600:]) == pytest.approx(
        result.best_score)
    # restore_best: the returned encoder holds the best epoch's weights
    np.testing.assert_array_equal(embed(result.encoder, X[600:]), tuned_val)
    assert load_checkpoint(result.last_checkpoint)["epoch"] == 3


def test_probe_metric_can_be_the_linear_probe_and_probing_can_be_off():
    X, y = buried_classes(400)
    config = TrainConfig(epochs=2, batch_size=32, m=4, probe_metric="linear",
                         probe_linear=False, **CPU)
    result = fit(small_encoder(), (X[:300], y[:300]), (X[300:], y[300:]), config)
    assert result.best_score == max(r["probe"]["linear"] for r in result.history)
    off = fit(small_encoder(), (X[:300], y[:300]), (X[300:], y[300:]),
              TrainConfig(epochs=1, batch_size=32, m=4, probe_every=0, **CPU))
    assert "probe" not in off.history[0] and off.best_epoch is None


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_load_only_as_weights(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "tuner-checkpoint-1", "x": Payload()}))
    with pytest.raises(ValueError, match="not a tuner checkpoint"):
        load_checkpoint(evil)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="not a tuner checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_objectives_and_their_errors():
    X, y = buried_classes(320)
    quick = {"epochs": 2, "batch_size": 32, "m": 4, "probe_every": 0, **CPU}
    ce = fit(small_encoder(), (X, y), config=TrainConfig(objective="ce", lr=3e-3, **quick))
    assert isinstance(ce.head, nn.Linear) and ce.head.out_features == 8
    assert ce.history[-1]["loss"] < ce.history[0]["loss"]
    hot = np.zeros((320, 8), dtype=np.float32)
    hot[np.arange(320), y] = 1.0
    hot[np.arange(0, 320, 3), (y[::3] + 1) % 8] = 1.0  # a third of the rows carry two labels
    jaccard = fit(small_encoder(), (X, hot), config=TrainConfig(objective="jaccard", **quick))
    assert np.isfinite(jaccard.history[-1]["loss"])
    bce = fit(small_encoder(), (X, hot), config=TrainConfig(objective="ce", **quick))
    assert np.isfinite(bce.history[-1]["loss"])
    with pytest.raises(ValueError, match="jaccard"):
        fit(small_encoder(), (X, hot), config=TrainConfig(objective="supcon", **quick))
    with pytest.raises(ValueError, match="objective"):
        fit(small_encoder(), (X, y), config=TrainConfig(objective="triplet", **quick))
    with pytest.raises(ValueError, match="classes"):
        fit(small_encoder(), (X, y), config=TrainConfig(**{**quick, "batch_size": 64}))
    frozen = small_encoder()
    frozen.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        fit(frozen, (X, y), config=TrainConfig(objective="supcon", head_dim=None, **quick))


def test_single_label_jaccard_is_supcon():
    X, y = buried_classes(256)
    quick = {"epochs": 1, "batch_size": 32, "m": 4, "probe_every": 0, **CPU}
    a = fit(small_encoder(), (X, y), config=TrainConfig(objective="jaccard", **quick))
    b = fit(small_encoder(), (X, y), config=TrainConfig(objective="supcon", **quick))
    assert a.history[0]["loss"] == b.history[0]["loss"]


@pytest.mark.slow
def test_supcon_tuning_beats_cross_entropy_by_knn():
    """The paper's claim on a small scale: an encoder whose geometry hides the classes (a
    residual MLP that starts as the identity on rows where noise dominates cosine distances)
    is tuned for 150 steps; weighted kNN@20 on held-out rows rises from near chance, and
    further than after the same 150 steps of cross-entropy."""
    X, y = buried_classes(20_000, n_classes=32)
    X_train, y_train, X_val, y_val = X[:19_200], y[:19_200], X[19_200:], y[19_200:]
    before = weighted_knn(X_train, y_train, X_val, y_val)
    assert before < 0.15
    gains = []
    for seed in (0, 1, 2):  # one run's margin depends on torch's random streams
        accuracy = {}
        for objective in ("supcon", "ce"):
            torch.manual_seed(seed)
            encoder = Adapter(64, 128)
            config = TrainConfig(objective=objective, epochs=1, batch_size=128, m=4, lr=3e-2,
                                 temperature=0.1, head_dim=None, probe_every=0, seed=seed,
                                 **CPU)
            result = fit(encoder, (X_train, y_train), config=config)
            assert result.history[0]["step"] == 150
            accuracy[objective] = weighted_knn(embed(encoder, X_train), y_train,
                                               embed(encoder, X_val), y_val)
        assert accuracy["supcon"] > before + 0.5, accuracy
        gains.append(accuracy["supcon"] - accuracy["ce"])
    # measured over six seeds: gain 0.046 on average, spread 0.021; the mean of three seeds
    # has a spread near 0.012, so 0.01 is three of them below the average
    assert np.mean(gains) > 0.01, gains


def _ddp_worker(rank, world, port, X, y, config, results):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        features = torch.randn(16, 8, dtype=torch.float64)
        labels = torch.arange(16) % 4
        local = features[rank * 8:(rank + 1) * 8].clone().requires_grad_(True)
        from tuner.distributed import gather, gather_with_grad

        loss = SupConLoss(0.1)(gather_with_grad(local), gather(labels[rank * 8:(rank + 1) * 8]))
        loss.backward()
        result = fit(small_encoder(), (X, y), config=config)
        results[rank] = {"loss": loss.item(), "grad": local.grad.clone(),
                         "state": {k: v.clone() for k, v in result.encoder.state_dict().items()},
                         "history": [r["loss"] for r in result.history]}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_on_two_processes_equals_one_process_on_the_global_batch():
    import socket

    import torch.multiprocessing as mp

    X, y = buried_classes(256)
    config = TrainConfig(epochs=2, batch_size=32, m=4, lr=3e-3, probe_every=0, **CPU)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, port, X, y, config, results), nprocs=2, join=True)
    # the loss of the gathered rows is the single-process loss on the global batch, and each
    # rank's gradient is that loss's gradient with respect to its own rows (x world size,
    # which DDP's averaging over ranks divides back out)
    torch.manual_seed(0)
    features = torch.randn(16, 8, dtype=torch.float64).requires_grad_(True)
    single = SupConLoss(0.1)(features, torch.arange(16) % 4)
    single.backward()
    for rank in range(2):
        assert results[rank]["loss"] == pytest.approx(single.item(), rel=1e-12)
        torch.testing.assert_close(results[rank]["grad"],
                                   2 * features.grad[rank * 8:(rank + 1) * 8])
    # a whole training run on 2 processes ends where one process with the same batches ends
    one = fit(small_encoder(), (X, y), config=config)
    assert results[0]["history"] == pytest.approx([r["loss"] for r in one.history], rel=1e-5)
    for name, tensor in one.encoder.state_dict().items():
        for rank in range(2):
            torch.testing.assert_close(results[rank]["state"][name], tensor, rtol=1e-4,
                                       atol=1e-5)


class RankNoise(nn.Module):
    """Dropout (torch's generator) and noise from numpy's and Python's global generators in
    training mode: every rank draws its own, so that a rank resumed with another rank's
    generator states trains differently from the run it resumes."""

    def __init__(self):
        super().__init__()
        self.layer, self.dropout = nn.Linear(64, 16), nn.Dropout(0.2)

    def forward(self, x):
        if self.training:
            noise = np.random.normal(scale=0.1, size=tuple(x.shape))  # noqa: NPY002
            x = (x + torch.from_numpy(noise.astype(np.float32))) * (1 + 0.01 * random.random())
        return self.layer(self.dropout(x))


class Stop(Exception):
    pass


def _ddp_resume_worker(rank, world, port, X, y, config, folder, results):
    """A run straight through, the same run stopped after two epochs and then resumed: each
    rank reports its weights and what its generators draw next. The process group is started
    by fit itself, from torchrun's environment variables."""
    import os

    import torch.distributed as dist

    from tuner import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))

    def next_draws():
        return torch.rand(3).tolist(), np.random.random(3).tolist(), random.random()  # noqa: NPY002

    def weights(result):
        return {k: v.clone() for k, v in result.encoder.state_dict().items()}

    train_rows, val_rows = (X[:192], y[:192]), (X[192:], y[192:])
    try:
        torch.manual_seed(0)
        straight = fit(RankNoise(), train_rows, val_rows, config, out_dir=folder / "straight")
        report = {"backend": dist.get_backend(), "straight": weights(straight),
                  "straight draws": next_draws(),
                  "history": [r["loss"] for r in straight.history]}
        original, calls = train.write_log, []

        def write_then_stop(*args, **kwargs):
            original(*args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                raise Stop

        train.write_log = write_then_stop
        torch.manual_seed(0)
        try:
            fit(RankNoise(), train_rows, val_rows, config, out_dir=folder / "stopped")
        except (Stop, RuntimeError) as error:  # rank 0 stops, rank 1 hears of it
            report["stopped with"] = type(error).__name__
        finally:
            train.write_log = original
        torch.manual_seed(123 + rank)  # the resumed run must restore its own states
        np.random.seed(456)  # noqa: NPY002
        random.seed(789)
        resumed = fit(RankNoise(), train_rows, val_rows, config, out_dir=folder / "stopped",
                      resume=True)
        report.update(resumed=weights(resumed), history_resumed=[
            r["loss"] for r in resumed.history], **{"resumed draws": next_draws()})
        results[rank] = report
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_resume_restores_every_ranks_own_generators(tmp_path):
    """Each rank keeps its own random streams across a resume (last.pt holds every rank's,
    taken after rank 0's probe): the resumed 2-process run equals the uninterrupted one on
    both ranks, weights and next draws alike. (Restoring rank 0's streams on every rank, as
    earlier versions did, gives rank 1 rank 0's dropout masks and noise: other weights.)"""
    import socket

    import torch.multiprocessing as mp

    X, y = buried_classes(256)
    config = TrainConfig(epochs=4, batch_size=32, m=4, lr=3e-3, probe_every=1,
                         probe_metric="knn_weighted@5", probe_linear=False,
                         restore_best=False, **CPU)  # the last epoch's weights are compared
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_ddp_resume_worker, args=(2, port, X, y, config, tmp_path, results), nprocs=2,
             join=True)
    assert results[0]["backend"] == results[1]["backend"] == "gloo"  # device cpu: gloo
    assert results[0]["stopped with"] == "Stop" and results[1]["stopped with"] == "RuntimeError"
    for rank in range(2):
        report = results[rank]
        for name, tensor in report["straight"].items():
            torch.testing.assert_close(report["resumed"][name], tensor, rtol=0, atol=0)
        assert report["resumed draws"] == report["straight draws"]
        assert report["history_resumed"] == report["history"]
    assert results[0]["straight draws"] != results[1]["straight draws"]  # streams of their own
    payload = load_checkpoint(tmp_path / "stopped" / "last.pt")
    assert len(payload["rng_ranks"]) == 2 and payload["epoch"] == 4


def test_validation_labels_keep_the_training_class_ids():
    """A validation set without some training classes must not be renumbered on its own."""
    X, y = buried_classes(400, n_classes=4, noise=0.1)
    keep = y[300:] != 0
    config = TrainConfig(epochs=1, batch_size=16, m=4, probe_every=1, probe_metric="knn_weighted@5",
                         probe_linear=False, **CPU)
    result = fit(small_encoder(), (X[:300], y[:300]), (X[300:][keep], y[300:][keep]), config)
    direct = weighted_knn(embed(result.encoder, X[:300]), y[:300],
                          embed(result.encoder, X[300:][keep]), y[300:][keep], k=5)
    assert result.history[0]["probe"]["knn_weighted@5"] == pytest.approx(direct)
    assert direct > 0.6  # renumbered validation classes would score near chance (0.33)
    with pytest.raises(ValueError, match="not among the training classes"):
        fit(small_encoder(), (X[:300], y[:300]), (X[300:], y[300:] + 10), config)


class NumpyNoise(nn.Module):
    """Adds noise from numpy's global generator in training mode, as wav2vec2's SpecAugment
    draws its masks."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(64, 16)

    def forward(self, x):
        if self.training:
            x = x + torch.from_numpy(np.random.normal(size=x.shape).astype(np.float32))  # noqa: NPY002
        return self.layer(x)


def test_numpy_randomness_inside_the_model_is_seeded_and_resumed(tmp_path):
    X, y = buried_classes(256)
    config = TrainConfig(epochs=3, batch_size=32, m=4, probe_every=0, **CPU)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(fit(NumpyNoise(), (X, y), config=config, out_dir=tmp_path / "a"))
    assert runs[0].history[-1]["loss"] == runs[1].history[-1]["loss"]
    torch.manual_seed(0)
    _fit_epochs(NumpyNoise(), X, y, config, tmp_path / "b", stop_after=1)
    np.random.seed(12345)  # noqa: NPY002 (the resumed run must restore its own state)
    resumed = fit(NumpyNoise(), (X, y), config=config, out_dir=tmp_path / "b", resume=True)
    torch.testing.assert_close(resumed.encoder.state_dict()["layer.weight"],
                               runs[0].encoder.state_dict()["layer.weight"], rtol=0, atol=0)


@pytest.mark.slow
def test_probe_size_is_checked_before_training_and_best_is_found_when_resuming(tmp_path):
    X, y = buried_classes(200)
    with pytest.raises(ValueError, match="needs at least 50 training rows"):
        fit(small_encoder(), (X[:40], y[:40]), (X[40:], y[40:]),
            TrainConfig(epochs=1, batch_size=32, m=4, probe_metric="knn_weighted@50", **CPU))
    config = TrainConfig(epochs=3, batch_size=32, m=4, lr=3e-2, **CPU)
    train, val = (X[:150], y[:150]), (X[150:], y[150:])
    _fit_epochs(small_encoder(), *train, config, tmp_path, stop_after=2, val=val)
    payload = load_checkpoint(tmp_path / "last.pt")
    assert payload["best_epoch"] in (1, 2)
    straight = fit(small_encoder(), train, val, config)
    resumed = fit(small_encoder(), train, val, config, resume=tmp_path / "last.pt")
    # no out_dir: best.pt is found beside last.pt, or the new best is kept in memory
    assert resumed.best_epoch == straight.best_epoch
    assert resumed.best_checkpoint == (tmp_path / "best.pt" if resumed.best_epoch <= 2 else None)
    np.testing.assert_array_equal(embed(resumed.encoder, X[150:]),
                                  embed(straight.encoder, X[150:]))


def _failing_worker(rank, world, port, X, y, config, results):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def fail_on_rank_zero(record):
        raise OSError("disk full")

    try:
        fit(small_encoder(), (X, y), config=config, on_epoch=fail_on_rank_zero)
    except BaseException as error:  # noqa: BLE001 (recorded for the parent to check)
        results[rank] = f"{type(error).__name__}: {error}"
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_failure_on_rank_zero_reaches_every_rank_instead_of_hanging():
    import socket

    import torch.multiprocessing as mp

    X, y = buried_classes(128)
    config = TrainConfig(epochs=2, batch_size=32, m=4, probe_every=0, **CPU)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    context = mp.spawn(_failing_worker, args=(2, port, X, y, config, results), nprocs=2,
                       join=False)
    for _ in range(120):
        if context.join(timeout=1):
            break
    else:
        for process in context.processes:
            process.kill()
        pytest.fail("a rank hung after rank 0 failed")
    assert results[0] == "OSError: disk full"
    assert results[1].startswith("RuntimeError: rank 0 failed")


def test_frozen_blocks_keep_their_batchnorm_statistics_and_trainable_ones_learn():
    X, y = buried_classes(256)
    torch.manual_seed(0)
    frozen = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32))
    frozen.requires_grad_(False)
    encoder = nn.Sequential(frozen, nn.Linear(32, 16), nn.BatchNorm1d(16))
    before = frozen[1].running_mean.clone(), encoder[2].running_mean.clone()
    fit(encoder, (X, y), config=TrainConfig(epochs=1, batch_size=32, m=4, probe_every=0,
                                            **CPU))
    torch.testing.assert_close(frozen[1].running_mean, before[0], rtol=0, atol=0)
    assert not torch.equal(encoder[2].running_mean, before[1])
