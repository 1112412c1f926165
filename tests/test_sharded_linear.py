"""The linear probes sharded over the processes of a torch.distributed run (gloo, CPU): every
rank gets exactly the statistics, the fits and the predictions one process gets."""

import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import run_ranks_of, torch_available

pytestmark = [pytest.mark.skipif(not torch_available(), reason="needs torch"), pytest.mark.slow]

DIM = 8
BLOCK = DIM * 23  # 23-row blocks of the statistics and of the objectives: many more than ranks

CHILD = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
import torch.distributed as dist
from probekit.errors import InputError
from probekit.probes import logistic, standard
from probekit.probes.linear import linear_predict
from probekit.ranks import Ranks

rank, size, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + folder + "/store", rank=rank,
                        world_size=size)
ranks = Ranks(rank, size)
standard.BLOCK_ELEMENTS = {block}
{body}
dist.destroy_process_group()
"""


def run_ranks(tmp_path, size: int, body: str, timeout: float = 120) -> list[str]:
    """Start ``size`` ranks running ``body`` (with ``rank``, ``size``, ``ranks``, ``folder``
    defined) and return their stdout lines; fails on a timeout (a hang) or a crash."""
    script = CHILD.format(tests=str(Path(__file__).parent), block=BLOCK,
                          body=textwrap.dedent(body))
    return run_ranks_of(script, tmp_path, size, timeout)


def data(folder):
    """Overlapping classes and tags, 520 rows (float32, saved for memory maps): 420 training
    rows (shuffled) and 100 test rows."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(520, DIM)) * rng.uniform(0.5, 3, DIM) + rng.normal(size=DIM)
    y = (X[:, 0] + X[:, 1] + rng.normal(size=520) > 0).astype(np.int64) \
        + 2 * (X[:, 2] + rng.normal(size=520) > 1)
    tags = X[:, :5] + rng.normal(size=(520, 5)) > 0.8
    np.save(Path(folder) / "X.npy", X.astype(np.float32))
    np.save(Path(folder) / "y.npy", y)
    np.save(Path(folder) / "tags.npy", tags)


def results(folder, ranks) -> dict[str, np.ndarray]:
    """What the probes compute on the saved data (memory-mapped) with ``ranks``: the
    statistics, every fit's parameters (recorded as they are made), the predictions, the
    scores and the sweeps, for the numpy and the torch backend."""
    from probekit.probes import linear, multilabel, standard
    from probekit.probes.linear import linear_predict
    from probekit.probes.multilabel import linear_tag_probe

    X = np.load(Path(folder) / "X.npy", mmap_mode="r")
    y = np.load(Path(folder) / "y.npy")
    tags = np.load(Path(folder) / "tags.npy")
    order = np.random.default_rng(0).permutation(520)
    train, test = order[:420], order[420:]
    out = {}
    scaling = standard.fit_scaling(X, train, ranks=ranks)
    out["mean"], out["scale"] = scaling.mean, scaling.scale
    fits = []
    original_softmax, original_ovr = linear.fit_softmax, multilabel.fit_ovr

    def softmax(*args, **kwargs):
        fit = original_softmax(*args, **kwargs)
        fits.append(np.concatenate([fit.coef.ravel(), fit.intercept]))
        return fit

    def ovr(*args, **kwargs):
        params, n_iter, converged = original_ovr(*args, **kwargs)
        fits.append(params.ravel())
        return params, n_iter, converged

    linear.fit_softmax, multilabel.fit_ovr = softmax, ovr
    try:
        for backend in ("numpy", "torch"):
            for grid in (linear.DEFAULT_C_GRID, [0.5]):
                run = linear_predict(X, y[train], X, n_classes=4, query_codes=y[test],
                                     C=grid, train_rows=train, test_rows=test,
                                     linear_backend=backend, ranks=ranks)
                key = f"{backend}_{len(grid)}"
                out[f"{key}_predictions"] = run.predictions
                out[f"{key}_rank"] = run.true_rank
                out[f"{key}_accuracy"] = np.mean(run.predictions == y[test])
                out[f"{key}_sweep"] = np.array([run.C, *run.val_accuracy, *run.val_loss,
                                                *run.n_iter, run.refit_n_iter])
                out[f"{key}_fits"] = np.concatenate(fits)
                fits.clear()
            val = np.arange(0, 420, 7)
            tagged = linear_tag_probe(X, tags[train], X, val_rows=val,
                                      fit_rows=np.setdiff1d(np.arange(420), val),
                                      train_rows=train, test_rows=test,
                                      linear_backend=backend, ranks=ranks)
            out[f"{backend}_tag_scores"] = tagged.scores
            out[f"{backend}_tag_thresholds"] = tagged.thresholds
            out[f"{backend}_tag_sweep"] = np.array([tagged.sweep.C, *tagged.sweep.scores,
                                                    *tagged.sweep.losses, *tagged.sweep.n_iter,
                                                    tagged.refit_n_iter])
            out[f"{backend}_tag_fits"] = np.concatenate(fits)
            fits.clear()
    finally:
        linear.fit_softmax, multilabel.fit_ovr = original_softmax, original_ovr
    return out


PROBES = """
from test_sharded_linear import results
np.savez(f"{folder}/rank{rank}.npz", **results(folder, ranks))
print("done")
"""


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process's results (the block grid shrunk as in the ranks)."""
    from probekit.probes import standard
    from probekit.ranks import SINGLE

    folder = tmp_path_factory.mktemp("single")
    data(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(standard, "BLOCK_ELEMENTS", BLOCK)
        return results(folder, SINGLE)


@pytest.mark.parametrize("size", [2, 3])
def test_every_rank_gets_the_single_process_probes(tmp_path, single, size):
    data(tmp_path)
    run_ranks(tmp_path, size, PROBES)
    assert len(single) == 2 + 2 * 2 * 5 + 2 * 4
    assert single["numpy_9_fits"].size == 10 * (DIM + 1) * 4  # nine fits of the sweep, a refit
    for rank in range(size):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert sorted(got.files) == sorted(single)
        for name, expected in single.items():
            assert np.array_equal(got[name], expected), (size, rank, name)


def test_a_failure_on_one_rank_ends_every_rank_with_one_line(tmp_path):
    body = """
    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    y = np.arange(300) % 3
    original = logistic.BLOCKS["softmax"]
    def failing(*args):
        if rank == 1:
            raise InputError("disk gone on this machine")
        return original(*args)
    logistic.BLOCKS["softmax"] = failing
    try:  # in an evaluation of the objective
        linear_predict(X, y, X[:10], n_classes=3, C=[1.0], ranks=ranks)
    except InputError as error:
        print("error:", error)
    logistic.BLOCKS["softmax"] = original
    from probekit.probes import linear
    scores = linear.decision_blocks
    def unreadable(*args):
        if rank == 2:
            raise OSError("cannot read the validation rows")
        return scores(*args)
    linear.decision_blocks = unreadable
    try:  # in the validation rows, which every rank scores
        linear_predict(X, y, X[:10], n_classes=3, C=[0.1, 1.0], ranks=ranks)
    except InputError as error:
        print("error:", error)
    """
    for out in run_ranks(tmp_path, 3, body):
        assert out.strip().splitlines() == [
            "error: rank 1 of 3 failed: disk gone on this machine",
            "error: rank 2 of 3 failed: OSError: cannot read the validation rows"]


def test_an_outlier_on_one_rank_is_refused_on_every_rank(tmp_path):
    from probekit.errors import InputError
    from probekit.probes import standard
    from probekit.probes.linear import linear_predict

    body = """
    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    far = X[:100].copy()
    far[95, 3] = 1e30  # in the last of the test rows' 5 blocks: rank 2's
    try:
        linear_predict(X, np.arange(300) % 3, far, n_classes=3, C=[1.0], ranks=ranks)
    except InputError as error:
        print("error:", error)
    """
    outputs = run_ranks(tmp_path, 3, body)
    X = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    far = X[:100].copy()
    far[95, 3] = 1e30
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(standard, "BLOCK_ELEMENTS", BLOCK)
        with pytest.raises(InputError, match="1 test rows lie more than") as refused:
            linear_predict(X, np.arange(300) % 3, far, n_classes=3, C=[1.0])
    for out in outputs:
        assert out.strip() == f"error: {refused.value}"


def test_each_rank_reads_only_its_share_of_the_training_rows(tmp_path):
    body = """
    class Recorded:  # the training rows, recording which are read
        def __init__(self, X):
            self.X, self.shape, self.read = X, X.shape, set()

        def __getitem__(self, index):
            self.read.update(np.arange(self.shape[0])[index].tolist())
            return self.X[index]

    rng = np.random.default_rng(0)
    X = Recorded(rng.normal(size=(400, 8)).astype(np.float32))
    for backend in ("numpy", "torch"):
        linear_predict(X, np.arange(400) % 3, X.X[:50], n_classes=3, C=[1.0],
                       linear_backend=backend, ranks=ranks)
    np.save(f"{folder}/read{rank}.npy", np.array(sorted(X.read)))
    """
    run_ranks(tmp_path, 2, body)
    first, second = (np.load(tmp_path / f"read{rank}.npy") for rank in range(2))
    assert len(first) and len(second)
    assert not np.intersect1d(first, second).size
    assert np.array_equal(np.union1d(first, second), np.arange(400))
