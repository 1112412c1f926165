"""``torchrun -m probekit evaluate``: 2 and 3 processes (gloo, CPU) write the report one process
writes, except the timings, the rank count in the protocol and where the linear probe's rows
were held (each rank streams its share); rank 0 alone prints and writes; commands that do not
shard are refused under torchrun with one line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import gaussian_classes, torch_available

pytestmark = [pytest.mark.skipif(not torch_available(), reason="needs torch"),
              pytest.mark.slow]


def probekit(args, ranks: int | None, folder, env=None) -> subprocess.CompletedProcess:
    """``python -m probekit ARGS`` alone (ranks None) or under torchrun with ``ranks``
    processes on this machine."""
    launcher = [sys.executable, "-m", "probekit"] if ranks is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={ranks}", "-m", "probekit"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([*launcher, *map(str, args)], cwd=folder, capture_output=True,
                          text=True, timeout=300, env=environment)


def comparable(path) -> dict:
    report = json.loads(path.read_text())
    report.pop("timings")
    report["protocol"].pop("ranks", None)
    report["linear"]["backend"].pop("rows")  # "stream" on every rank of a sharded run
    return report


@pytest.fixture(scope="module")
def class_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharded")
    X, y = gaussian_classes(350, 12, 5, separation=1.0, seed=3)
    X[5] = X[6]  # a tie the merged lists must order as one process does
    np.save(folder / "X.npy", X.astype(np.float32))
    np.save(folder / "y.npy", y)
    single = probekit(["evaluate", "X.npy", "y.npy", "--out", "one.json", "-q"], None, folder)
    assert single.returncode == 0, single.stderr
    return folder, single


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_write_the_single_process_report(class_data, ranks):
    folder, single = class_data
    out = f"r{ranks}.json"
    run = probekit(["evaluate", "X.npy", "y.npy", "--out", out, "-q"], ranks, folder)
    assert run.returncode == 0, run.stderr[-3000:]
    assert comparable(folder / out) == comparable(folder / "one.json")
    assert json.loads((folder / out).read_text())["protocol"]["ranks"] == ranks
    assert run.stdout == single.stdout  # the summary, printed once, by rank 0


def test_tag_matrix_under_torchrun(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 10)).astype(np.float32)
    Y = (X[:, :4] + 0.5 * rng.normal(size=(240, 4)) > 0.3).astype(np.int8)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    args = ["evaluate", "X.npy", "Y.npy", "--multilabel", "-q", "--out"]
    single = probekit([*args, "one.json"], None, tmp_path)
    assert single.returncode == 0, single.stderr
    run = probekit([*args, "two.json"], 2, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert comparable(tmp_path / "two.json") == comparable(tmp_path / "one.json")


def test_what_does_not_shard_is_refused_with_one_line(class_data):
    folder, _ = class_data
    run = probekit(["evaluate", "X.npy", "y.npy", "--search", "ivf", "-q"], 2, folder)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert lines and all("runs in one process" in line for line in lines), run.stderr[-2000:]
    run = probekit(["diagnose", "X.npy", "y.npy"], 2, folder)
    assert run.returncode != 0
    assert "error: probekit diagnose runs in one process" in run.stderr
