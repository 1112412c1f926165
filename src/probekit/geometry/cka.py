"""Linear CKA: how similar are two representations of the same samples?"""

from __future__ import annotations

import numpy as np

from probekit.errors import InputError
from probekit.validate import check_embeddings


def _hsic(X: np.ndarray, Y: np.ndarray, debiased: bool) -> float:
    """HSIC of the linear kernels K = XXᵀ, L = YYᵀ of centred X, Y, from feature-space
    products only (O(N·D), no N x N matrix). Debiased: the unbiased estimator of Song et al.
    (JMLR 2012) with K̃, L̃ the kernels with zeroed diagonals."""
    n = X.shape[0]
    cross = np.linalg.norm(X.T @ Y) ** 2  # tr(KL)
    if not debiased:
        return cross / (n - 1) ** 2
    k_diag, l_diag = np.einsum("ij,ij->i", X, X), np.einsum("ij,ij->i", Y, Y)
    trace = cross - k_diag @ l_diag  # tr(K̃L̃)
    k_row = X @ X.sum(axis=0) - k_diag  # K̃1
    l_row = Y @ Y.sum(axis=0) - l_diag  # L̃1
    return (trace + k_row.sum() * l_row.sum() / ((n - 1) * (n - 2))
            - 2.0 * (k_row @ l_row) / (n - 2)) / (n * (n - 3))


def cka(X, Z, *, debiased: bool = True) -> float:
    """Linear centred kernel alignment between two embeddings of the same N samples.

    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels of the centred
    matrices, i.e. ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` when biased. Invariant to orthogonal
    transforms, isotropic scaling and translation; 1 means the same geometry. The biased
    estimator is inflated for N small against D (independent N = 200, D = 1000 Gaussians give
    0.83); the debiased one (default) stays near 0.

    References: Kornblith et al., "Similarity of Neural Network Representations Revisited",
    ICML 2019; Nguyen, Raghu & Kornblith, ICLR 2021 (debiased CKA).
    """
    X = check_embeddings(X, name="first embeddings")
    Z = check_embeddings(Z, name="second embeddings")
    if X.shape[0] != Z.shape[0]:
        raise InputError(f"CKA needs the same samples in both: {X.shape[0]} vs {Z.shape[0]} rows")
    if debiased and X.shape[0] < 4:
        raise InputError("debiased CKA needs at least 4 samples")
    A = np.asarray(X, dtype=np.float64)
    B = np.asarray(Z, dtype=np.float64)
    A = A - A.mean(axis=0)
    B = B - B.mean(axis=0)
    denominator = np.sqrt(_hsic(A, A, debiased) * _hsic(B, B, debiased))
    return float(_hsic(A, B, debiased) / denominator) if denominator > 0 else 0.0
