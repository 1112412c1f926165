"""tuner.distributed without a GPU: the device of each rank, the process-group backend and
timeout, and what the probe in the loop is given (its device, backend and workers). CUDA is
simulated by monkeypatching torch.cuda where the logic only asks questions of it."""

import datetime

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

from tuner import distributed, train  # noqa: E402
from tuner.distributed import (  # noqa: E402
    DEFAULT_TIMEOUT_MINUTES,
    TIMEOUT_VARIABLE,
    backend_for,
    check_process_group,
    init_distributed,
    process_group_timeout,
    select_device,
)
from tuner.train import TrainConfig, fit, probe_backend  # noqa: E402

CPU = {"progress": False, "verbose": False, "device": "cpu"}


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: torch sees n CUDA devices (0: none); set_device calls are recorded."""
    calls = []

    def simulate(count):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(
            ("set_device", str(torch.device(device)))))
        return calls

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return simulate


def test_backend_follows_the_training_device():
    assert backend_for("cpu") == "gloo"
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for("cuda") == backend_for("cuda:3") == "nccl"
    assert backend_for(torch.device("cuda", 1)) == "nccl"


def test_select_device_without_cuda(gpus):
    gpus(0)
    assert select_device("auto").type == "cpu"
    assert select_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ValueError, match="no CUDA"):
        select_device("cuda")
    for bad in ("tpu", "cuda:x", "gpu:0", "cuda1"):
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
            select_device(bad)


def test_select_device_gives_each_local_rank_its_gpu(gpus):
    gpus(2)
    assert select_device("auto", 1) == torch.device("cuda", 1)
    assert select_device("cuda", 0) == torch.device("cuda", 0)
    assert select_device("cuda:1") == torch.device("cuda", 1)
    assert select_device("cpu", 1).type == "cpu"


def test_more_local_ranks_than_gpus_is_one_line_naming_both_counts(gpus, monkeypatch):
    gpus(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(ValueError) as caught:
        select_device("cuda", local_rank=1, world_size=2)
    message = str(caught.value)
    assert "\n" not in message
    assert "local rank 1" in message and "1 CUDA device(s) (CUDA_VISIBLE_DEVICES=3)" in message
    assert "--nproc_per_node=1" in message and "device cpu" in message
    with pytest.raises(ValueError, match="local rank 1"):
        select_device("auto", local_rank=1, world_size=2)
    with pytest.raises(ValueError, match="cuda:2 was asked for but torch sees 1 CUDA"):
        select_device("cuda:2")
    with pytest.raises(ValueError, match="names one GPU for all 2 processes"):
        select_device("cuda:0", local_rank=0, world_size=2)


def test_process_group_timeout_default_environment_and_errors(monkeypatch):
    monkeypatch.delenv(TIMEOUT_VARIABLE, raising=False)
    assert process_group_timeout() == DEFAULT_TIMEOUT_MINUTES == 60.0
    monkeypatch.setenv(TIMEOUT_VARIABLE, "90")
    assert process_group_timeout() == 90.0
    assert process_group_timeout(5) == 5.0  # an explicit value wins
    for bad in ("soon", "0", "-3", "inf", "nan"):
        monkeypatch.setenv(TIMEOUT_VARIABLE, bad)
        with pytest.raises(ValueError, match=f"{TIMEOUT_VARIABLE} must be a finite number"):
            process_group_timeout()
    with pytest.raises(ValueError, match="timeout_minutes must be"):
        process_group_timeout(0)


@pytest.fixture
def torchrun_env(monkeypatch):
    """The environment of local rank 1 of 2 under torchrun, with the process group's start
    recorded instead of run."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv(TIMEOUT_VARIABLE, raising=False)
    events = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: events.append(
        ("init_process_group", backend, timeout)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    return events


def test_init_distributed_on_the_cpu_uses_gloo_even_with_gpus(gpus, torchrun_env):
    set_device_calls = gpus(2)
    assert init_distributed("cpu") == (1, 2, 1)
    assert torchrun_env == [("init_process_group", "gloo", datetime.timedelta(minutes=60))]
    assert set_device_calls == []  # no GPU touched


def test_init_distributed_on_cuda_sets_the_device_first_and_uses_nccl(gpus, torchrun_env,
                                                                      monkeypatch):
    calls = gpus(2)
    monkeypatch.setenv(TIMEOUT_VARIABLE, "120")
    # one list for both kinds of event, in order
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: calls.append(
        ("init_process_group", backend, timeout)))
    assert init_distributed("auto") == (1, 2, 1)
    assert calls == [("set_device", "cuda:1"),
                     ("init_process_group", "nccl", datetime.timedelta(minutes=120))]


def test_init_distributed_with_too_few_gpus_fails_before_touching_any(gpus, torchrun_env):
    calls = gpus(1)
    with pytest.raises(ValueError, match="local rank 1 needs a GPU of its own .* sees 1 CUDA"):
        init_distributed("cuda")
    assert calls == [] and torchrun_env == []


def test_a_single_process_starts_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("cpu") == (0, 1, 0)
    assert not dist.is_initialized()


def test_cpu_training_under_an_nccl_group_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    with pytest.raises(ValueError, match="runs NCCL, which carries CUDA tensors only.*gloo"):
        check_process_group(torch.device("cpu"))
    check_process_group(torch.device("cuda", 0))
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    check_process_group(torch.device("cpu"))


def test_probe_backend_follows_the_training_device():
    assert probe_backend(torch.device("cpu")) == "faiss-cpu"  # faiss-cpu is a dependency
    assert probe_backend(torch.device("cuda", 0)) == "auto"
    # faiss-gpu builds its index on the current CUDA device, which fit sets to the training GPU
    assert probe_backend(torch.device("cuda", 1)) == "auto"


def separable(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    return (rng.normal(size=(n, 8)) + 3 * np.eye(8)[y]).astype(np.float32), y


def test_the_probe_in_the_loop_embeds_with_num_workers_and_searches_on_the_cpu(monkeypatch):
    import probekit

    seen = {"embed": [], "knn": []}
    real_embed, real_knn = train.embed, probekit.knn_probe

    def embed(*args, **kwargs):
        seen["embed"].append((kwargs["num_workers"], str(kwargs["device"])))
        return real_embed(*args, **{**kwargs, "num_workers": 0})  # no worker start-up cost

    def knn_probe(*args, **kwargs):
        seen["knn"].append(kwargs["backend"])
        return real_knn(*args, **kwargs)

    monkeypatch.setattr(train, "embed", embed)
    monkeypatch.setattr(probekit, "knn_probe", knn_probe)
    X, y = separable()
    config = TrainConfig(epochs=1, batch_size=16, m=4, probe_metric="knn_weighted@5",
                         probe_linear=False, num_workers=3, **CPU)
    monkeypatch.setattr(train, "DataLoader", lambda *a, **k: torch.utils.data.DataLoader(
        *a, **{**k, "num_workers": 0}))
    torch.manual_seed(0)
    fit(nn.Linear(8, 4), (X, y), (X[:32], y[:32]), config)
    assert seen["embed"] == [(3, "cpu"), (3, "cpu")]  # the probe's training and validation rows
    assert seen["knn"] == ["faiss-cpu"]


def test_the_multilabel_probe_gets_the_backend_too(monkeypatch):
    import probekit

    seen = []
    real = probekit.dual_probe
    monkeypatch.setattr(probekit, "dual_probe",
                        lambda *a, **k: seen.append(k["backend"]) or real(*a, **k))
    X, y = separable(120)
    hot = np.eye(4, dtype=np.float32)[y]
    hot[::3, (y[::3] + 1) % 4] = 1.0
    config = TrainConfig(objective="jaccard", epochs=1, batch_size=24, probe_linear=False,
                         probe_metric="knn_weighted@5", **CPU)
    torch.manual_seed(0)
    fit(nn.Linear(8, 4), (X, hot), (X[:48], hot[:48]), config)
    assert seen == ["faiss-cpu"]


def test_fit_makes_the_training_gpu_current_before_anything_else(monkeypatch):
    """``torch.cuda.set_device`` comes first, before the model moves or anything is allocated,
    so that "cuda" (probekit's search, NCCL) means the training GPU from then on."""
    events = []

    class Stop(Exception):
        pass

    def set_device(device):
        events.append(str(torch.device(device)))
        raise Stop

    monkeypatch.setattr(train, "select_device", lambda *args: torch.device("cuda", 1))
    monkeypatch.setattr(train, "check_process_group", lambda device: None)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    X, y = separable()
    model = nn.Linear(8, 4)
    with pytest.raises(Stop):
        fit(model, (X, y), config=TrainConfig(epochs=1, batch_size=16, m=4, probe_every=0,
                                              progress=False, verbose=False, device="cuda:1"))
    assert events == ["cuda:1"]
    assert next(model.parameters()).device.type == "cpu"  # nothing had moved yet


def test_each_rank_restores_its_own_generators_and_earlier_checkpoints_rank_0s():
    """``_restore`` on rank r takes ``rng_ranks[r]``; a checkpoint of an earlier version (one
    ``rng`` entry) restores rank 0 only, and a rank beyond the saved ones keeps its seeding."""
    import random

    cpu = torch.device("cpu")
    states = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        np.random.seed(seed)  # noqa: NPY002
        random.seed(seed)
        states.append(train._rng_states(cpu))

    def restored(payload, rank):
        model = nn.Linear(2, 2)
        optimizer = torch.optim.AdamW(model.parameters())
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        full = {"encoder": model.state_dict(), "head": {}, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": [], "best_epoch": None,
                "best_score": None, "epoch": 1, **payload}
        parent = nn.Module()
        parent.encoder, parent.head = model, nn.Identity()
        torch.manual_seed(99)  # what fit's seeding stands for here
        np.random.seed(99)  # noqa: NPY002
        random.seed(99)
        train._restore(full, parent, optimizer, scheduler, train.TrainResult(model, nn.Identity()),
                       cpu, rank)
        return torch.rand(1).item(), np.random.random(), random.random()  # noqa: NPY002

    def draws(seed):
        torch.manual_seed(seed)
        np.random.seed(seed)  # noqa: NPY002
        random.seed(seed)
        return torch.rand(1).item(), np.random.random(), random.random()  # noqa: NPY002

    current = {"rng": states[0], "rng_ranks": states}
    assert restored(current, 0) == draws(10)
    assert restored(current, 1) == draws(11)
    assert restored(current, 2) == draws(99)  # not in the checkpoint: fit's own seeding
    earlier = {"rng": states[0]}
    assert restored(earlier, 0) == draws(10)
    assert restored(earlier, 1) == draws(99)
