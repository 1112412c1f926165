"""How many dimensions does an embedding space use? Spectral diagnostics.

Everything comes from the D x D Gram matrix ``ZᵀZ`` accumulated in float64 over row chunks
(or ``ZZᵀ`` when N < D): singular values are the square roots of its eigenvalues, and the
covariance spectrum follows from the centred Gram ``ZᵀZ − N m mᵀ``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, logsumexp

from probekit.arrays import row_chunks


def gram_spectrum(X: np.ndarray, shifted_gram: np.ndarray | None = None,
                  shift: np.ndarray | None = None,
                  total: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Squared singular values of the uncentred and of the centred rows, descending.

    Returns ``(sigma2, lambda_times_n)``: the eigenvalues of ``ZᵀZ`` and of the centred
    ``(Z − m)ᵀ(Z − m)`` (so the covariance eigenvalues are ``lambda_times_n / N``). Both come
    from ``G' = Σ(z − s)(z − s)ᵀ`` for a shift s near the mean, accumulated in float64:
    ``(Z − m)ᵀ(Z − m) = G' − t tᵀ/N`` and ``ZᵀZ = G' + s tᵀ + t sᵀ + N s sᵀ`` with
    ``t = Σ(z − s)``, so data far from the origin keeps its small eigenvalues.
    ``shifted_gram``, ``shift`` and the column sums ``total`` may come from
    :func:`probekit.geometry.clusters.class_sums`; when N < D the N x N Gram is used instead.
    """
    n, dim = X.shape
    if n >= dim:
        if shifted_gram is None or shift is None or total is None:
            shifted_gram, shift, total = np.zeros((dim, dim)), None, np.zeros(dim)
            for start, stop in row_chunks(n, dim):
                block = np.asarray(X[start:stop], dtype=np.float64)
                shift = block.mean(axis=0) if shift is None else shift
                shifted_gram += (block - shift).T @ (block - shift)
                total += block.sum(axis=0)
        offset_total = total - n * shift
        centred = shifted_gram - np.outer(offset_total, offset_total) / n
        gram = (shifted_gram + np.outer(shift, offset_total) + np.outer(offset_total, shift)
                + n * np.outer(shift, shift))
    else:
        Z = np.asarray(X, dtype=np.float64)
        gram = Z @ Z.T
        shifted = Z - Z.mean(axis=0)
        centred = shifted @ shifted.T
    sigma2 = np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)
    lam = np.clip(np.linalg.eigvalsh(centred)[::-1], 0.0, None)
    return sigma2, lam


def rankme(singular_values: np.ndarray) -> float:
    """RankMe (Garrido et al., ICML 2023): ``exp(−Σ p_k log p_k)``, ``p_k = σ_k/‖σ‖₁ + 1e-7``.

    Range [1, min(N, D)]; higher means more dimensions in use.
    """
    total = singular_values.sum()
    if total <= 0:
        return 1.0
    p = singular_values / total + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))


def explained_dimensions(eigenvalues: np.ndarray, share: float) -> int:
    """Smallest m whose top-m covariance eigenvalues hold at least ``share`` of the variance:
    ``min{m : Σ_{r≤m} λ_r ≥ share · Σ λ}`` (PCA; Jolliffe, *Principal Component Analysis*,
    2002). Range [1, D]; higher means the variance is spread over more directions."""
    cumulative = np.cumsum(eigenvalues) / eigenvalues.sum()
    return int(np.searchsorted(cumulative, share - 1e-12) + 1)


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """Participation ratio ``(Σλ)² / Σλ²`` of the covariance eigenvalues (Gao et al., "A theory
    of multineuronal dimensionality", 2017); range [1, D], 1 for one direction and D for an
    isotropic space; higher means more dimensions in use."""
    relative = eigenvalues / eigenvalues.max()  # the ratio is scale-free; this keeps it finite
    return float(relative.sum() ** 2 / np.sum(relative**2))


def alpha_req(eigenvalues: np.ndarray, rtol: float = 1e-12) -> tuple[float, float]:
    """α-ReQ (Agrawal et al., NeurIPS 2022): the slope α of ``log λ_r ≈ −α log r + b``.

    Weighted least squares with weights 1/r over ranks 11…100 when at least 100 positive
    eigenvalues exist, else over the ranks in [10 %, 90 %] of them; eigenvalues below
    ``rtol x max`` count as zero (pass about D x the input's machine epsilon). Returns
    ``(α, R²)`` (the weighted R² of the fit); α ≈ 1 is the reference value for good
    representations.
    """
    positive = eigenvalues[eigenvalues > eigenvalues.max(initial=0) * rtol]
    m = len(positive)
    if m >= 100:
        ranks = np.arange(11, 101)
    else:
        ranks = np.arange(max(1, int(np.ceil(0.1 * m))), max(2, int(np.floor(0.9 * m))) + 1)
        ranks = ranks[ranks <= m]
    if len(ranks) < 2:
        return float("nan"), float("nan")
    x, y, w = np.log(ranks), np.log(positive[ranks - 1]), 1.0 / ranks
    design = np.column_stack([x, np.ones_like(x)])
    sqrt_w = np.sqrt(w)[:, None]
    (slope, intercept), *_ = np.linalg.lstsq(design * sqrt_w, y * sqrt_w[:, 0], rcond=None)
    fitted = slope * x + intercept
    y_mean = np.sum(w * y) / w.sum()
    total = np.sum(w * (y - y_mean) ** 2)
    r2 = 1.0 - np.sum(w * (y - fitted) ** 2) / total if total > 0 else 1.0
    return float(-slope), float(r2)


def isoscore(eigenvalues: np.ndarray, dim: int) -> float:
    """IsoScore (Rudman et al., ACL Findings 2022): isotropy of the PCA variance vector.

    With Σ the D covariance eigenvalues, Σ̂ = √D Σ/‖Σ‖, δ = ‖Σ̂ − 1‖/√(2(D − √D)),
    φ = (D − δ²(D − √D))²/D², IsoScore = (Dφ − 1)/(D − 1). Range [0, 1]; 1 is isotropic.
    """
    variances = np.zeros(dim)
    variances[: min(dim, len(eigenvalues))] = eigenvalues[:dim]
    if dim < 2 or not variances.any():
        return 0.0
    variances = variances / variances.max()  # scale-free; keeps the norm finite
    scaled = np.sqrt(dim) * variances / np.linalg.norm(variances)
    delta = np.linalg.norm(scaled - 1.0) / np.sqrt(2.0 * (dim - np.sqrt(dim)))
    phi = (dim - delta**2 * (dim - np.sqrt(dim))) ** 2 / dim**2
    return float((dim * phi - 1.0) / (dim - 1.0))


def uniform_sphere_uniformity(dim: int, t: float = 2.0) -> float:
    """Uniformity ``log E exp(−t‖u − v‖²)`` of independent uniform points on S^{D−1}.

    With s = u·v, ``‖u − v‖² = 2 − 2s`` and ``E e^{κs} = Γ(D/2)(κ/2)^{1−D/2} I_{D/2−1}(κ)``,
    κ = 2t: D = 2 gives −1.575, D = 3 gives −2.080, large D tends to −2t.
    """
    kappa, nu = 2.0 * t, dim / 2.0 - 1.0
    return float(-2.0 * t + gammaln(dim / 2.0) + (1.0 - dim / 2.0) * np.log(kappa / 2.0)
                 + _log_bessel_i(nu, kappa))


def _log_bessel_i(nu: float, x: float, terms: int = 200) -> float:
    """``log I_ν(x)`` from its power series, summed in log space (no underflow at large ν):
    ``I_ν(x) = Σ_k (x/2)^{2k+ν} / (k! Γ(ν + k + 1))``."""
    k = np.arange(terms)
    logs = (2 * k + nu) * np.log(x / 2.0) - gammaln(k + 1) - gammaln(nu + k + 1)
    return float(logsumexp(logs))
