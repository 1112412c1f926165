"""Every blocked loop gives the numbers of one block.

Large inputs are processed in blocks (of rows, queries, resamples, class pairs, tags) to keep
memory bounded; the tests' inputs are small, so with the default block sizes each loop runs
once. Here the block sizes shrink until every loop runs many times, and the reports must not
change: the probes' numbers exactly; the geometry, whose float32 matrix products a BLAS may
round differently for blocks of other shapes and whose float64 sums run in another order, to
1e-6 (float32's precision is 6e-8 per product).
"""

import json

import numpy as np
import pytest

from conftest import gaussian_classes
from probekit import arrays, diagnose, dual_probe, neighbours
from probekit.geometry import clusters, graph, pairwise
from probekit.probes import knn, metrics, tagging

TINY = {
    (arrays, "CHUNK_ELEMENTS"): 64,           # rows streamed from the input
    (neighbours, "_SCORE_ELEMENTS"): 300,     # numpy/torch search blocks of queries
    (neighbours, "_QUERY_CHUNK"): 7,          # faiss calls
    (neighbours, "DATABASE_BLOCK_ELEMENTS"): 8 * 37,  # database blocks of the exact search
    (knn, "_VOTE_ELEMENTS"): 20,              # vote tables
    (metrics, "_BOOTSTRAP_ELEMENTS"): 500,    # bootstrap resamples
    (clusters, "_PAIR_ELEMENTS"): 5,          # class pairs of CDNV, Davies-Bouldin, NC2
    (clusters, "_SCORE_ELEMENTS"): 40,        # nearest-mean scores
    (clusters, "_PASS_ELEMENTS"): 8 * 30,     # the float64 passes (class sums, Gram)
    (graph, "_DISTINCT_ELEMENTS"): 45,        # neighbour ids de-duplicated at once
    (pairwise, "_BLOCK_ELEMENTS"): 300,       # uniformity
    (pairwise, "_SILHOUETTE_ELEMENTS"): 40,   # silhouette
    (pairwise, "RETRIEVAL_ELEMENTS"): 500,    # MAP@R's chunks of queries
    (neighbours, "LIST_GROUP_ELEMENTS"): 8 * 20,  # rows of the IVF scan held at once
    (tagging, "_BLOCK_ELEMENTS"): 50,         # tags sorted at once
    (tagging, "_CHUNK_BINS"): 3,              # bins per bootstrap chunk of the mAP
    (tagging, "_RESAMPLE_BLOCK"): 3,          # resamples per sparse product
}


def test_every_block_size_named_here_exists():
    for module, name in TINY:
        assert hasattr(module, name), f"{module.__name__}.{name} is gone: update TINY"


def numbers(report) -> dict:
    data = report.to_dict()
    data.pop("timings")
    return data


def assert_close(ours, reference, path="report"):
    """Equal structure; floats equal to 1e-6, the rest exactly."""
    if isinstance(reference, dict):
        assert ours.keys() == reference.keys(), path
        for key in reference:
            assert_close(ours[key], reference[key], f"{path}.{key}")
    elif isinstance(reference, list):
        assert len(ours) == len(reference), path
        for index, (a, b) in enumerate(zip(ours, reference, strict=True)):
            assert_close(a, b, f"{path}[{index}]")
    elif isinstance(reference, float):
        assert ours == pytest.approx(reference, rel=1e-6, abs=1e-9), path
    else:
        assert ours == reference, path


def run(backend, **options):
    X, y = gaussian_classes(240, 8, 6, separation=1.2, seed=21)
    return dual_probe(X, y, k=(1, 5, 20), n_bootstrap=200, backend=backend,
                      extra=("isoscore",), save_predictions=True, **options)


@pytest.mark.parametrize("backend", ["faiss-cpu", "numpy"])
@pytest.mark.parametrize("options", [{}, {"loo": True}, {"folds": 3}])
def test_blocked_probes_and_geometry_equal_one_block(monkeypatch, backend, options):
    reference = run(backend, **options)
    for (module, name), value in TINY.items():
        monkeypatch.setattr(module, name, value)
    blocked = run(backend, **options)
    ours, theirs = numbers(blocked), numbers(reference)
    # the probes: every vote, k, bootstrap interval and paired test exactly
    for section in ("knn", "linear", "linear_vs_knn", "input", "protocol", "warnings"):
        assert json.dumps(ours[section]) == json.dumps(theirs[section]), section
    assert_close(ours["geometry"], theirs["geometry"], "geometry")
    for key, value in reference.arrays.items():
        np.testing.assert_allclose(blocked.arrays[key], value, rtol=1e-6, err_msg=key) \
            if value.dtype.kind == "f" else np.testing.assert_array_equal(
                blocked.arrays[key], value, err_msg=key)


def test_blocked_tag_probes_equal_one_block(monkeypatch):
    rng = np.random.default_rng(4)
    Y = rng.random((160, 7)) < 0.3
    X = rng.normal(size=(160, 10)) + Y @ rng.normal(size=(7, 10)) * 1.5
    reference = numbers(dual_probe(X, Y, k=(1, 5), n_bootstrap=100))
    for (module, name), value in TINY.items():
        monkeypatch.setattr(module, name, value)
    assert_close(numbers(dual_probe(X, Y, k=(1, 5), n_bootstrap=100)), reference)


def test_blocked_diagnose_equals_one_block(monkeypatch):
    X, y = gaussian_classes(300, 12, 10, separation=1.0, seed=5)
    reference = diagnose(X, y, sample_size=120).to_dict()
    for (module, name), value in TINY.items():
        monkeypatch.setattr(module, name, value)
    assert_close(diagnose(X, y, sample_size=120).to_dict(), reference)
