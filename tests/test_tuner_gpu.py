"""tuner on CUDA: bf16 autocast in training and embedding, the float32 guards of the audio
encoders, resume, the probe's device, and DDP on two GPUs. Marked ``gpu`` and skipped without
CUDA (the CPU versions are in test_train.py, test_tuner_precision.py and
test_tuner_distributed.py; benchmarks/gpu_check.py runs the same comparisons at larger sizes).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from conftest import synthetic_speechlike  # noqa: E402
from tuner import train  # noqa: E402
from tuner.distributed import select_device  # noqa: E402
from tuner.embed import embed  # noqa: E402
from tuner.encoders import CrepeEncoder, GE2EEncoder  # noqa: E402
from tuner.train import TrainConfig, fit, load_checkpoint  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

QUIET = {"progress": False, "verbose": False}
BF16_TOLERANCE = 4 * 2.0**-8  # relative L2: four units of bf16 rounding


def buried_classes(n, n_classes=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centres = rng.normal(size=(n_classes, 8))
    X = np.hstack([centres[y] + 0.5 * rng.normal(size=(n, 8)), 2.5 * rng.normal(size=(n, 56))])
    return X.astype(np.float32), y


def small_encoder(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, 16))


def relative_error(value, reference):
    value, reference = value.double().cpu(), reference.double().cpu()
    return float((value - reference).norm() / reference.norm())


def last_gpu():
    return torch.device("cuda", torch.cuda.device_count() - 1)


def test_fit_on_cuda_with_bf16_autocast_probes_on_the_training_gpu(monkeypatch):
    device = last_gpu()
    seen = []
    real = train.probe_scores

    def probe_scores(model, train_set, val_set, config, where):
        seen.append((torch.cuda.current_device(), next(model.parameters()).device, where))
        return real(model, train_set, val_set, config, where)

    monkeypatch.setattr(train, "probe_scores", probe_scores)
    X, y = buried_classes(512)
    config = TrainConfig(epochs=2, batch_size=64, m=8, lr=3e-3, device=str(device), **QUIET)
    result = fit(small_encoder(), (X[:384], y[:384]), (X[384:], y[384:]), config)
    assert next(result.encoder.parameters()).device == device
    assert np.isfinite(result.history[-1]["loss"]) and result.best_score is not None
    assert seen == [(device.index, device, device)] * 2
    assert torch.cuda.current_device() == device.index


def test_resume_on_cuda_continues_the_same_run(tmp_path):
    """The CUDA generator (dropout) is saved and restored with the rest: a run stopped after
    two epochs and resumed ends where the straight run ends."""
    X, y = buried_classes(512)
    config = TrainConfig(epochs=4, batch_size=64, m=8, lr=3e-3, device="cuda",
                         probe_every=0, **QUIET)
    straight = fit(small_encoder(), (X, y), config=config, out_dir=tmp_path / "a")

    class Stop(Exception):
        pass

    original, calls = train.write_log, []

    def write_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    train.write_log = write_then_stop
    try:
        with pytest.raises(Stop):
            fit(small_encoder(), (X, y), config=config, out_dir=tmp_path / "b")
    finally:
        train.write_log = original
    assert "cuda" in load_checkpoint(tmp_path / "b" / "last.pt")["rng_ranks"][0]
    torch.cuda.manual_seed(99)
    resumed = fit(small_encoder(), (X, y), config=config, out_dir=tmp_path / "b", resume=True)
    for name, tensor in straight.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[name], tensor, rtol=0,
                                   atol=1e-6)


def test_embed_on_cuda_matches_the_cpu():
    X, _ = buried_classes(2048)
    encoder = small_encoder().eval()
    cpu = torch.from_numpy(embed(encoder, X, device="cpu"))
    plain = torch.from_numpy(embed(encoder, X, device="cuda", amp=False))
    mixed = torch.from_numpy(embed(encoder, X, device="cuda", amp=True))
    assert relative_error(plain, cpu) < 1e-5
    assert relative_error(mixed, cpu) < BF16_TOLERANCE


def test_ge2e_under_cuda_autocast_runs_its_lstms_in_float32():
    """CUDA autocast would run cuDNN's LSTMs in float16 whatever dtype it names; the encoder
    keeps them (and its output layer) out of autocast."""
    torch.manual_seed(0)
    for windows in (False, True):
        encoder = GE2EEncoder(windows=windows).eval().cuda()
        inputs = encoder.preprocess([synthetic_speechlike(n, i) for i, n in
                                     enumerate((30_000, 12_000))])
        inputs = {key: value.cuda() for key, value in inputs.items()}
        with torch.no_grad():
            reference = encoder(**inputs)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                mixed = encoder(**inputs)
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(mixed, reference, rtol=0, atol=1e-5)


def test_crepe_under_cuda_autocast_sums_frames_in_float32():
    torch.manual_seed(0)
    encoder = CrepeEncoder("tiny").eval().cuda()
    inputs = encoder.preprocess([synthetic_speechlike(80_000, 3, amplitude=0.1)])
    assert int(inputs["lengths"][0]) == 501
    inputs = {key: value.cuda() for key, value in inputs.items()}
    with torch.no_grad():
        reference = encoder(**inputs)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = encoder(**inputs)
    assert mixed.dtype == torch.float32
    assert relative_error(mixed, reference) < BF16_TOLERANCE


def test_more_local_ranks_than_gpus_is_one_line():
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"local rank {count} needs a GPU of its own .* sees "
                                         f"{count} CUDA device"):
        select_device("cuda", local_rank=count, world_size=count + 1)


def _nccl_worker(rank, world, port, X, y, folder, results):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    try:
        config = TrainConfig(epochs=2, batch_size=64, m=8, lr=3e-3, device="cuda",
                             probe_metric="knn_weighted@5", **QUIET)
        result = fit(small_encoder(), (X[:384], y[:384]), (X[384:], y[384:]), config,
                     out_dir=folder)
        results[rank] = {"backend": dist.get_backend(), "device": torch.cuda.current_device(),
                         "loss": result.history[-1]["loss"]}
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_on_two_gpus_uses_nccl_and_one_gpu_per_rank(tmp_path):
    import socket

    import torch.multiprocessing as mp

    X, y = buried_classes(512)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_nccl_worker, args=(2, port, X, y, tmp_path, results), nprocs=2, join=True)
    assert [results[r]["backend"] for r in range(2)] == ["nccl", "nccl"]
    assert [results[r]["device"] for r in range(2)] == [0, 1]
    assert len(load_checkpoint(tmp_path / "last.pt")["rng_ranks"]) == 2
