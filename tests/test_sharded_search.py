"""The exact search sharded over the processes of a torch.distributed run (gloo, CPU): every
rank gets exactly the neighbours one process finds."""

import textwrap

import numpy as np
import pytest

from conftest import run_ranks_of, torch_available

pytestmark = [pytest.mark.skipif(not torch_available(), reason="needs torch"), pytest.mark.slow]

CHILD = """
import sys
import numpy as np
import torch.distributed as dist
from probekit import neighbours
from probekit.errors import InputError
from probekit.ranks import Ranks

rank, size, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + folder + "/store", rank=rank,
                        world_size=size)
ranks = Ranks(rank, size)
neighbours.DATABASE_BLOCK_ELEMENTS = 6 * 37  # 37-row blocks: many more blocks than ranks
{body}
dist.destroy_process_group()
"""


def run_ranks(tmp_path, size: int, body: str, timeout: float = 120) -> list[str]:
    """Start ``size`` ranks running ``body`` (with ``rank``, ``size``, ``ranks``, ``folder``
    defined) and return their stdout lines; fails on a timeout (a hang) or a crash."""
    return run_ranks_of(CHILD.replace("{body}", textwrap.dedent(body)), tmp_path, size, timeout)


def data(path):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(500, 6)).astype(np.float32)
    X[10] = X[11]  # an exact duplicate: ties must resolve as one process resolves them
    np.save(path, X)
    return X


SEARCH = """
X = np.load(folder + "/X.npy")
for metric in ("cosine", "euclidean", "ip"):
    for backend in ("faiss-cpu", "numpy"):
        vectors = neighbours.prepare_vectors(X, metric=metric)
        held = neighbours.search(vectors[:60], vectors[60:], 25, metric=metric,
                                 backend=backend, ranks=ranks)
        lazy = neighbours.PreparedRows(X, np.arange(60, 500), metric=metric)
        read = neighbours.search(vectors[:60], lazy, 25, metric=metric, backend=backend,
                                 ranks=ranks)
        loo = neighbours.search(vectors, vectors, 10, metric=metric, exclude_self=True,
                                backend=backend, ranks=ranks)
        np.savez(f"{folder}/{metric}_{backend}_{rank}.npz", held_s=held.similarities,
                 held_i=held.indices, read_s=read.similarities, read_i=read.indices,
                 loo_s=loo.similarities, loo_i=loo.indices)
print("done")
"""


@pytest.mark.parametrize("size", [2, 3])
def test_every_rank_gets_the_single_process_neighbours(tmp_path, monkeypatch, size):
    from probekit import neighbours

    X = data(tmp_path / "X.npy")
    run_ranks(tmp_path, size, SEARCH)
    monkeypatch.setattr(neighbours, "DATABASE_BLOCK_ELEMENTS", 6 * 37)
    for metric in ("cosine", "euclidean", "ip"):
        for backend in ("faiss-cpu", "numpy"):
            vectors = neighbours.prepare_vectors(X, metric=metric)
            held = neighbours.search(vectors[:60], vectors[60:], 25, metric=metric,
                                     backend=backend)
            loo = neighbours.search(vectors, vectors, 10, metric=metric, exclude_self=True,
                                    backend=backend)
            for rank in range(size):
                got = np.load(tmp_path / f"{metric}_{backend}_{rank}.npz")
                for prefix in ("held", "read"):
                    assert np.array_equal(got[f"{prefix}_i"], held.indices), (metric, backend)
                    assert np.array_equal(got[f"{prefix}_s"], held.similarities)
                assert np.array_equal(got["loo_i"], loo.indices)
                assert np.array_equal(got["loo_s"], loo.similarities)


def test_more_ranks_than_blocks(tmp_path, monkeypatch):
    """4 ranks, 2 blocks: ranks 0 and 2 have nothing to search (an empty share between two
    full ones) and still end with the one-process lists."""
    from probekit import neighbours

    X = data(tmp_path / "X.npy")
    body = """
    neighbours.DATABASE_BLOCK_ELEMENTS = 6 * 250  # 440 database rows: 2 blocks
    X = np.load(folder + "/X.npy")
    found = neighbours.search(X[:60], X[60:], 25, metric="euclidean", backend="numpy",
                              ranks=ranks)
    np.savez(f"{folder}/four_{rank}.npz", s=found.similarities, i=found.indices)
    """
    run_ranks(tmp_path, 4, body)
    monkeypatch.setattr(neighbours, "DATABASE_BLOCK_ELEMENTS", 6 * 250)
    expected = neighbours.search(X[:60], X[60:], 25, metric="euclidean", backend="numpy")
    for rank in range(4):
        got = np.load(tmp_path / f"four_{rank}.npz")
        assert np.array_equal(got["i"], expected.indices)
        assert np.array_equal(got["s"], expected.similarities)


def test_a_failure_on_one_rank_ends_every_rank_with_one_line(tmp_path):
    body = """
    X = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    original = neighbours._search_faiss
    def failing(*args):
        if rank == 1:
            raise InputError("disk gone on this machine")
        return original(*args)
    neighbours._search_faiss = failing
    try:
        neighbours.search(X[:20], X, 5, backend="faiss-cpu", ranks=ranks)
    except InputError as error:
        print("error:", error)
    """
    outputs = run_ranks(tmp_path, 3, body, timeout=120)
    for out in outputs:
        assert out.strip() == "error: rank 1 of 3 failed: disk gone on this machine"


def test_an_approximate_search_is_refused_when_sharded(tmp_path):
    body = """
    try:
        neighbours.search(np.eye(6, dtype=np.float32), np.eye(6, dtype=np.float32), 2,
                          method="ivf", ranks=ranks)
    except InputError as error:
        print("error:", error)
    """
    for out in run_ranks(tmp_path, 2, body):
        assert "runs in one process" in out
