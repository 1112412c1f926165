import numpy as np
import pytest

from conftest import torch_available
from probekit import accelerators, neighbours
from probekit.errors import InputError

CPU_BACKENDS = ["faiss-cpu", "numpy"] + (["torch"] if torch_available() else [])


def brute_force(queries, database, k, metric):
    """Reference from the definition, in float64: similarity, then sort by (-sim, index)."""
    q, x = queries.astype(np.float64), database.astype(np.float64)
    if metric == "euclidean":
        sims = -np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    else:
        sims = q @ x.T
    order = np.lexsort((np.broadcast_to(np.arange(len(x)), sims.shape), -sims), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("metric", ["cosine", "ip", "euclidean"])
def test_search_matches_brute_force(backend, metric):
    rng = np.random.default_rng(1)
    database = neighbours.prepare_vectors(rng.normal(size=(300, 12)), metric=metric)
    queries = neighbours.prepare_vectors(rng.normal(size=(40, 12)), metric=metric)
    found = neighbours.search(queries, database, 7, metric=metric, backend=backend)
    ref_sims, ref_idx = brute_force(queries, database, 7, metric)
    assert found.backend == backend
    assert found.similarities.dtype == np.float32 and found.indices.dtype == np.int64
    np.testing.assert_array_equal(found.indices, ref_idx)
    np.testing.assert_allclose(found.similarities, ref_sims, rtol=1e-4, atol=1e-4)
    assert (np.diff(found.similarities, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_k_equal_to_database_size(backend):
    rng = np.random.default_rng(2)
    database = neighbours.prepare_vectors(rng.normal(size=(9, 4)), metric="cosine")
    found = neighbours.search(database[:3], database, 9, backend=backend)
    assert sorted(found.indices[0].tolist()) == list(range(9))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exclude_self_removes_own_index_but_keeps_duplicates(backend):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(20, 6))
    vectors = neighbours.prepare_vectors(np.vstack([base, base[:5]]), metric="cosine")
    found = neighbours.search(vectors, vectors, 3, metric="cosine", exclude_self=True,
                             backend=backend)
    rows = np.arange(len(vectors))
    assert not (found.indices == rows[:, None]).any()
    # rows 0..4 are duplicated as 20..24: the duplicate is the nearest neighbour, similarity 1
    for i in range(5):
        assert found.indices[i, 0] == 20 + i and found.indices[20 + i, 0] == i
        assert found.similarities[i, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_exclude_self_with_more_duplicates_than_k(backend):
    vectors = neighbours.prepare_vectors(np.ones((6, 3)), metric="cosine")
    found = neighbours.search(vectors, vectors, 2, exclude_self=True, backend=backend)
    assert found.indices.shape == (6, 2)
    for i in range(6):
        assert i not in found.indices[i]
        assert len(set(found.indices[i].tolist())) == 2


def test_zero_rows_under_cosine_are_named():
    X = np.ones((5, 3))
    X[[1, 3]] = 0
    with pytest.raises(InputError, match="2 of 5 rows are all zeros"):
        neighbours.prepare_vectors(X, metric="cosine")
    assert neighbours.prepare_vectors(X, metric="euclidean").dtype == np.float32


def test_prepare_normalises_and_selects_rows():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(10, 5))
    rows = np.array([7, 2, 2])
    out = neighbours.prepare_vectors(X, rows, metric="cosine")
    expected = X[rows] / np.linalg.norm(X[rows], axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_bad_arguments():
    vectors = neighbours.prepare_vectors(np.eye(4), metric="cosine")
    with pytest.raises(InputError, match="k=5"):
        neighbours.search(vectors, vectors, 5)
    with pytest.raises(InputError, match="k=4"):
        neighbours.search(vectors, vectors, 4, exclude_self=True)
    with pytest.raises(InputError, match="unknown metric"):
        neighbours.search(vectors, vectors, 1, metric="manhattan")
    with pytest.raises(InputError, match="unknown search backend"):
        neighbours.search(vectors, vectors, 1, backend="annoy")
    with pytest.raises(InputError, match="dimensions"):
        neighbours.search(vectors[:, :3], vectors, 1)


def test_auto_prefers_faiss_on_cpu():
    assert neighbours.resolve_backend("auto") in ("faiss-cpu", "faiss-gpu", "torch")
    assert "numpy" in neighbours.available_backends()


@pytest.mark.skipif(not torch_available(), reason="torch not installed")
def test_torch_on_cuda_when_present():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(5)
    database = neighbours.prepare_vectors(rng.normal(size=(5000, 32)), metric="cosine")
    found = neighbours.search(database[:100], database, 10, backend="torch")
    ref = neighbours.search(database[:100], database, 10, backend="numpy")
    np.testing.assert_array_equal(found.indices, ref.indices)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_euclidean_is_exact_on_data_far_from_the_origin(backend):
    rng = np.random.default_rng(6)
    database = rng.normal(size=(400, 16)) + 3000.0
    queries = rng.normal(size=(50, 16)) + 3000.0
    found = neighbours.search(neighbours.prepare_vectors(queries, metric="euclidean"),
                             neighbours.prepare_vectors(database, metric="euclidean"), 5,
                             metric="euclidean", backend=backend)
    _, ref_idx = brute_force(queries, database, 5, "euclidean")
    assert np.mean(found.indices[:, 0] == ref_idx[:, 0]) > 0.95


def test_naming_a_cpu_backend_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from probekit import neighbours as n; "
            "v = n.prepare_vectors(np.eye(4) + 1, metric='cosine'); "
            "n.search(v, v, 2, backend='faiss-cpu'); n.search(v, v, 2, backend='numpy'); "
            "print('torch' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=120)
    assert completed.stdout.strip() == "False", completed.stderr


def test_faiss_gpu_indexes_go_to_the_current_cuda_device(monkeypatch):
    """tuner sets each rank's GPU current; faiss-gpu's index must follow it, not GPU 0."""
    import sys
    import types

    cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True,
                                 current_device=lambda: 3)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert accelerators.current_cuda_device() == 3
    monkeypatch.setitem(sys.modules, "torch", None)
    assert accelerators.current_cuda_device() == 0


def test_merging_keeps_the_best_with_ties_by_index_whatever_the_grouping():
    scores = np.array([[5.0, 3.0, 3.0]], dtype=np.float32)
    idx = np.array([[7, 2, 9]])
    more_scores = np.array([[4.0, 3.0]], dtype=np.float32)
    more_idx = np.array([[11, 1]])
    merged_scores, merged_idx = neighbours.merge_neighbours(scores.copy(), idx.copy(),
                                                            more_scores, more_idx)
    assert merged_idx.tolist() == [[7, 11, 1]]  # the tie at 3.0 goes to the lowest index
    assert merged_scores.tolist() == [[5.0, 4.0, 3.0]]
    other_scores, other_idx = neighbours.merge_neighbours(
        np.array([[4.0, 3.0, 3.0]], dtype=np.float32), np.array([[11, 1, 2]]),
        np.array([[5.0, 3.0]], dtype=np.float32), np.array([[7, 9]]))
    assert other_idx.tolist() == merged_idx.tolist()


def test_the_exact_search_scans_its_database_in_blocks_with_one_answer(monkeypatch):
    rng = np.random.default_rng(3)
    vectors = neighbours.prepare_vectors(rng.normal(size=(900, 6)), metric="euclidean")
    whole = neighbours.search(vectors[:50], vectors, 40, metric="euclidean")
    monkeypatch.setattr(neighbours, "DATABASE_BLOCK_ELEMENTS", 6 * 25)  # 36 blocks of 25
    assert len(neighbours.database_blocks(900, 6)) == 36
    calls = []
    blocked = neighbours.search(vectors[:50], vectors, 40, metric="euclidean",
                                progress=lambda done, total: calls.append((done, total)))
    assert np.array_equal(blocked.indices, whole.indices)
    np.testing.assert_allclose(blocked.similarities, whole.similarities, rtol=1e-6)
    assert calls[-1] == (36 * 50, 36 * 50)
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:], strict=False))
    # the centring mean is summed over the same blocks whatever their grouping
    expected = vectors.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(neighbours.database_mean(vectors), expected, rtol=1e-6)


def test_a_gpu_faiss_is_trusted_only_after_a_trial_search_in_a_child(monkeypatch):
    """faiss's CUDA checks abort the process (a build without kernels for the GPU); the trial
    search runs in a child process, so an abort there answers False and this process lives."""
    import types

    monkeypatch.setattr(accelerators, "nvidia_device_present", lambda: True)
    monkeypatch.setattr(accelerators, "import_faiss",
                        lambda: types.SimpleNamespace(StandardGpuResources=object))
    for script, expected in (("import os; os.abort()", False), ("print('ok')", True),
                             ("raise SystemExit(3)", False)):
        accelerators.faiss_gpu_works.cache_clear()
        monkeypatch.setattr(accelerators, "FAISS_GPU_PROBE", script + "  # {device}")
        assert accelerators.faiss_gpu_works(0) is expected
    accelerators.faiss_gpu_works.cache_clear()
    monkeypatch.setattr(accelerators, "nvidia_device_present", lambda: False)
    assert accelerators.faiss_gpu_works(0) is False
    accelerators.faiss_gpu_works.cache_clear()
