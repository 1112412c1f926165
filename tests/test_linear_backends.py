"""The linear probes on their backends (numpy, torch) and in bounded memory (a standardised
copy, or rows streamed from their source): the same objective, the same choices, the numbers
apart by no more than the tolerances stated here.

Coefficients: the bound the stopping rule guarantees. Each backend stops L-BFGS at a point θ
with a small gradient g. The objectives are strongly convex with modulus μ (the smallest
Hessian eigenvalue, computed here in float64) on the parameters that matter (for the softmax:
weights and intercepts centred over classes; adding one vector to every class changes no
probability, and both runs stay at 0 along it), so each stopping point lies within ‖g‖/μ of the
one minimiser and two stopping points within ``B = (‖g_numpy‖ + ‖g_torch‖) / μ`` of each other
(``<= 2 √p tol / μ`` when the gradient rule stopped both). The tests allow 2 B: the factor 2 is
for the Hessian's variation between the stopping points and the minimiser (1e-5 apart; the
Hessian moves on the scale of the parameters, ~1). A test score moves by at most ``‖x̃ᵢ‖ B``,
so a prediction can change only where the top two scores are closer than twice that.

Accuracy and mAP: within 0.1 points and the same C. The guaranteed bound above is loose for
them (B is 0.2-0.5 % of ‖θ‖ here, enough to reorder close scores); in practice both backends
take the same L-BFGS steps and differ by float32 rounding (measured: 1e-6 in the coefficients),
and 0.1 points is a tenth or less of the bootstrap CI's half-width the report prints (checked),
so a difference the report cannot resolve.

Copy and stream walk the same blocks with the same float32 values, so they agree to the bit.
"""

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from conftest import gaussian_classes, torch_available
from probekit.errors import InputError
from probekit.probes import logistic, standard
from probekit.probes.linear import fit_logistic, linear_predict, linear_probe, standardize
from probekit.probes.multilabel import fit_ovr_logistic, linear_tag_probe
from probekit.probes.tagging import bootstrap_map_ci, mean_average_precision
from probekit.splits import stratified_holdout

needs_torch = pytest.mark.skipif(not torch_available(), reason="torch is not installed")


def overlapping(n, dim=32, n_classes=10, seed=0):
    return gaussian_classes(n, dim, n_classes, separation=0.35, seed=seed)


def tagged(n=1500, n_tags=8, dim=24, seed=0, noise=1.5):
    rng = np.random.default_rng(seed)
    Y = rng.random((n, n_tags)) < 0.2
    Y[np.arange(n), rng.integers(0, n_tags, n)] = True
    X = Y.astype(float) @ rng.normal(size=(n_tags, dim)) + noise * rng.normal(size=(n, dim))
    return (X + 5.0).astype(np.float32), Y


def with_ones(X):
    return np.hstack([X.astype(np.float64), np.ones((len(X), 1))])


def softmax_gradient_hessian(X, y, coef, intercept, penalty):
    """The softmax objective's float64 gradient and Hessian at (coef, intercept), parameters
    ordered as probekit's (W raveled by rows, then b)."""
    Xt = with_ones(X)
    theta = np.vstack([coef, intercept])
    z = Xt @ theta
    P = np.exp(z - z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    R = P.copy()
    R[np.arange(len(y)), y] -= 1
    G = Xt.T @ R / len(y)
    G[:-1] += penalty * coef
    S = P[:, :, None] * np.eye(P.shape[1]) - P[:, :, None] * P[:, None, :]
    size = theta.size
    H = np.einsum("id,ie,ikl->dkel", Xt, Xt, S).reshape(size, size) / len(y)
    H[: coef.size, : coef.size] += penalty * np.eye(coef.size)
    return G.ravel(), H


def centred_basis(dim, n_classes):
    """Orthonormal basis of the parameters centred over classes (each row of Θ sums to 0)."""
    centring = np.eye(n_classes) - 1.0 / n_classes
    basis = np.linalg.svd(centring)[0][:, : n_classes - 1]
    return np.kron(np.eye(dim + 1), basis)


def ovr_gradient_hessians(X, Y, params, penalty):
    """Per tag: the float64 gradient and Hessian of its binary logistic objective."""
    Xt = with_ones(X)
    out = []
    for tag in range(Y.shape[1]):
        p = 1 / (1 + np.exp(-(Xt @ params[:, tag])))
        g = Xt.T @ (p - Y[:, tag]) / len(X)
        g[:-1] += penalty * params[:-1, tag]
        H = (Xt * (p * (1 - p))[:, None]).T @ Xt / len(X)
        H[:-1, :-1] += penalty * np.eye(X.shape[1])
        out.append((g, H))
    return out


@needs_torch
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_softmax_coefficients_agree_within_the_stopping_bound(C):
    X, y = overlapping(3000, 16, 5, seed=3)
    train, test = standardize(X[:2400], X[2400:])
    y, y_test = y[:2400], y[2400:]
    fits = {b: fit_logistic(train, y, n_classes=5, C=C, backend=b) for b in ("numpy", "torch")}
    Q = centred_basis(16, 5)
    centred, grads, mus = {}, [], []
    for name, fit in fits.items():
        assert fit.converged
        g, H = softmax_gradient_hessian(train, y, fit.coef, fit.intercept, 1 / (C * 2400))
        centred[name] = Q.T @ np.vstack([fit.coef, fit.intercept]).ravel()
        grads.append(np.linalg.norm(Q.T @ g))
        mus.append(np.linalg.eigvalsh(Q.T @ H @ Q)[0])
    bound = sum(grads) / min(mus)
    assert np.linalg.norm(centred["numpy"] - centred["torch"]) <= 2 * bound
    # predictions differ only where the top two scores are within the scores' movement
    scores = {name: fit.decision_scores(test) for name, fit in fits.items()}
    top2 = np.sort(scores["numpy"], axis=1)[:, -2:]
    slack = 2 * np.linalg.norm(with_ones(test), axis=1) * (2 * bound)
    differ = scores["numpy"].argmax(axis=1) != scores["torch"].argmax(axis=1)
    assert (top2[differ, 1] - top2[differ, 0] <= slack[differ]).all()
    accuracy = {name: np.mean(s.argmax(axis=1) == y_test) for name, s in scores.items()}
    assert abs(accuracy["numpy"] - accuracy["torch"]) <= np.mean(top2[:, 1] - top2[:, 0] <= slack)


@needs_torch
@pytest.mark.parametrize("C", [0.01, 1.0])
def test_one_vs_rest_coefficients_agree_within_the_stopping_bound(C):
    X, Y = tagged()
    train, _ = standardize(X[:1200], X[:1])
    Y = Y[:1200]
    fits = {b: fit_ovr_logistic(train, Y, C=C, backend=b) for b in ("numpy", "torch")}
    gradients = np.zeros(Y.shape[1])
    mus = np.full(Y.shape[1], np.inf)
    for params, _, converged in fits.values():
        assert converged
        for tag, (g, H) in enumerate(ovr_gradient_hessians(train, Y, params, 1 / (C * 1200))):
            gradients[tag] += np.linalg.norm(g)
            mus[tag] = min(mus[tag], np.linalg.eigvalsh(H)[0])
    # the tags' problems are independent: one bound per tag
    difference = np.linalg.norm(fits["numpy"][0] - fits["torch"][0], axis=0)
    assert (difference <= 2 * gradients / mus).all()


@needs_torch
def test_probe_on_torch_chooses_the_same_C_within_a_tenth_of_a_point():
    X, y = overlapping(4000, seed=1)
    runs = {b: linear_probe(X[:3000], y[:3000], X[3000:], y[3000:], n_bootstrap=10,
                            linear_backend=b) for b in ("numpy", "torch")}
    numpy_run, torch_run = runs["numpy"], runs["torch"]
    assert numpy_run.predictions.C == torch_run.predictions.C
    assert abs(numpy_run.scores.accuracy - torch_run.scores.accuracy) <= 0.001
    low, high = numpy_run.scores.ci95
    assert 0.001 <= (high - low) / 2 / 10  # a difference the report cannot resolve
    assert np.max(np.abs(np.subtract(numpy_run.predictions.val_accuracy,
                                     torch_run.predictions.val_accuracy))) <= 1 / 300
    assert numpy_run.to_dict()["backend"] == {"name": "numpy", "device": "cpu", "rows": "copy"}
    assert torch_run.to_dict()["backend"]["name"] == "torch"


@needs_torch
def test_tag_probe_on_torch_chooses_the_same_C_within_a_tenth_of_a_point():
    X, Y = tagged(2000)
    order = np.random.default_rng(0).permutation(1500)
    val_rows, fit_rows = np.sort(order[:150]), np.sort(order[150:])
    runs = {b: linear_tag_probe(X[:1500], Y[:1500], X[1500:], val_rows=val_rows,
                                fit_rows=fit_rows, linear_backend=b)
            for b in ("numpy", "torch")}
    assert runs["numpy"].sweep.C == runs["torch"].sweep.C
    maps = [mean_average_precision(Y[1500:], run.scores) for run in runs.values()]
    assert abs(maps[0] - maps[1]) <= 0.001
    low, high = bootstrap_map_ci(Y[1500:], runs["numpy"].scores, n_resamples=200)
    assert 0.001 <= (high - low) / 2 / 10  # a difference the report cannot resolve
    assert runs["torch"].protocol_dict()["backend"]["name"] == "torch"


def memmap(tmp_path, X, dtype):
    np.save(tmp_path / f"X_{np.dtype(dtype).name}.npy", X.astype(dtype))
    return np.load(tmp_path / f"X_{np.dtype(dtype).name}.npy", mmap_mode="r")


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_streamed_rows_give_the_same_bits_as_the_copy(tmp_path, monkeypatch, backend, dtype):
    X, y = overlapping(1300, 24, 6, seed=2)
    source = memmap(tmp_path, X + 40, dtype)  # a mean far from 0: standardised per block
    train_rows = np.random.default_rng(0).permutation(1300)[:1000]
    monkeypatch.setattr(standard, "BLOCK_ELEMENTS", 24 * 230)  # 5 blocks, a ragged last one
    runs = [linear_predict(source, y[train_rows], source, n_classes=6, C=[0.1, 1.0],
                           query_codes=y[1000:], train_rows=train_rows,
                           test_rows=np.arange(1000, 1300), linear_backend=backend,
                           memory_budget=budget) for budget in (1 << 30, 0)]
    copied, streamed = (run.protocol_dict() for run in runs)
    assert copied.pop("backend")["rows"] == "copy" and streamed.pop("backend")["rows"] == "stream"
    assert copied == streamed
    np.testing.assert_array_equal(runs[0].predictions, runs[1].predictions)
    np.testing.assert_array_equal(runs[0].true_rank, runs[1].true_rank)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_streamed_tags_give_the_same_bits_as_the_copy(tmp_path, monkeypatch, backend):
    X, Y = tagged(900)
    source = memmap(tmp_path, X, np.float16)
    monkeypatch.setattr(standard, "BLOCK_ELEMENTS", 24 * 61)
    order = np.random.default_rng(1).permutation(700)
    runs = [linear_tag_probe(source, Y[:700], source, C=[0.1, 1.0], val_rows=np.sort(order[:70]),
                             fit_rows=np.sort(order[70:]), train_rows=np.arange(700),
                             test_rows=np.arange(700, 900), linear_backend=backend,
                             memory_budget=budget) for budget in (1 << 30, 0)]
    assert [run.backend[2] for run in runs] == ["copy", "stream"]
    np.testing.assert_array_equal(runs[0].scores, runs[1].scores)
    np.testing.assert_array_equal(runs[0].thresholds, runs[1].thresholds)
    assert runs[0].sweep.losses == runs[1].sweep.losses


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_the_same_inputs_give_the_same_bytes(backend):
    X, y = overlapping(1500, seed=4)
    first, again = (linear_predict(X[:1200], y[:1200], X[1200:], n_classes=10,
                                   query_codes=y[1200:], C=[0.01, 1.0, 100.0],
                                   linear_backend=backend)
                    for _ in range(2))
    assert first.protocol_dict() == again.protocol_dict()
    assert first.predictions.tobytes() == again.predictions.tobytes()


def test_streaming_holds_no_copy_of_the_training_rows(tmp_path, monkeypatch):
    X, y = overlapping(20_000, 64, 5, seed=5)
    source = memmap(tmp_path, X, np.float32)  # 5 MiB
    monkeypatch.setattr(standard, "BLOCK_ELEMENTS", 64 * 256)
    peaks = []
    for budget in (1 << 30, 0):
        tracemalloc.start()
        linear_predict(source, y[:19_000], source, n_classes=5, C=[1.0], max_iter=3,
                       test_rows=np.arange(19_000, 20_000), train_rows=np.arange(19_000),
                       memory_budget=budget)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    size = 19_000 * 64 * 4
    assert peaks[0] >= size  # the copy
    assert peaks[1] < size / 4  # blocks, the labels and the row index only


def test_outliers_are_refused_before_any_fit_in_both_placements():
    # a training row can lie at most sqrt(n) standard deviations out (it moves the statistics);
    # a validation row (scaled by the fit part) or a test row can lie anywhere
    X, y = overlapping(600)
    _, val = stratified_holdout(y, test_size=0.1, seed=0)
    far = X.copy()
    far[val[4], 3] = 1e30
    for budget in (1 << 30, 0):
        with pytest.raises(InputError, match="1 validation rows lie more than"):
            linear_predict(far, y, X[:10], n_classes=10, C=[0.1, 1.0], memory_budget=budget)
        with pytest.raises(InputError, match="1 test rows lie more than"):
            linear_predict(X, y, far[val], n_classes=10, C=[1.0], memory_budget=budget)


def test_backend_and_budget_are_checked(monkeypatch):
    X, y = overlapping(300)
    with pytest.raises(InputError, match="unknown linear backend 'jax'"):
        linear_predict(X, y, X, n_classes=10, linear_backend="jax")
    with pytest.raises(InputError, match="memory_budget"):
        linear_predict(X, y, X, n_classes=10, memory_budget=-1)
    monkeypatch.setattr(logistic, "import_torch", lambda: None)
    with pytest.raises(InputError, match=r"needs torch.*pip install 'probekit-dual\[tuner\]'"):
        linear_predict(X, y, X, n_classes=10, linear_backend="torch")
    with pytest.raises(InputError, match="needs torch"):
        fit_ovr_logistic(X, y[:, None] == 1, C=1.0, backend="torch")


def test_numpy_and_auto_do_not_import_torch_without_an_nvidia_device():
    code = (
        "import os, sys, numpy as np\n"
        "from probekit.probes.linear import linear_predict\n"
        "from probekit.probes.multilabel import linear_tag_probe\n"
        "X = np.random.default_rng(0).normal(size=(200, 4)); y = np.arange(200) % 3\n"
        "linear_predict(X, y, X, n_classes=3, C=[1.0], linear_backend='numpy')\n"
        "assert 'torch' not in sys.modules\n"
        "linear_tag_probe(X, y[:, None] == np.arange(3), X, C=[1.0], val_rows=np.arange(20),\n"
        "                 fit_rows=np.arange(20, 200), linear_backend='numpy')\n"
        "assert 'torch' not in sys.modules\n"
        "if not os.path.exists('/dev/nvidiactl'):\n"
        "    linear_predict(X, y, X, n_classes=3, C=[1.0], linear_backend='auto')\n"
        "    assert 'torch' not in sys.modules, 'auto imported torch on a CPU machine'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def cuda_usable():
    if not torch_available():
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_usable(), reason="needs CUDA")
def test_on_cuda_device_resident_copied_and_streamed_rows_give_the_same_bits(monkeypatch):
    from probekit.probes import logistic_torch

    X, y = overlapping(3000, seed=6)
    runs = {}
    for placement, device_bytes, host_bytes in (("device", None, 1 << 30),
                                                ("copy", 0, 1 << 30), ("stream", 0, 0)):
        if device_bytes is not None:
            monkeypatch.setattr(logistic_torch, "device_budget",
                                lambda *_, limit=device_bytes: limit)
        runs[placement] = linear_predict(X[:2500], y[:2500], X[2500:], n_classes=10,
                                         query_codes=y[2500:], linear_backend="torch",
                                         memory_budget=host_bytes)
    details = {name: run.protocol_dict() for name, run in runs.items()}
    for name, detail in details.items():
        assert detail.pop("backend") == {"name": "torch", "device": "cuda", "rows": name}
    assert details["device"] == details["copy"] == details["stream"]
    numpy_run = linear_predict(X[:2500], y[:2500], X[2500:], n_classes=10,
                               query_codes=y[2500:])
    assert numpy_run.C == runs["device"].C
    assert abs(np.mean(numpy_run.predictions == y[2500:])
               - np.mean(runs["device"].predictions == y[2500:])) <= 0.001
