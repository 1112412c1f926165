"""Train/test splits: a given split, a stratified holdout, stratified k-fold.

All splits are stratified and seeded; the same labels and seed give the same indices.
"""

from __future__ import annotations

import numpy as np

from probekit.errors import InputError


def check_class_sizes(codes: np.ndarray, class_names, *, minimum: int, why: str) -> None:
    """Raise :class:`InputError` naming every class with fewer than ``minimum`` samples."""
    counts = np.bincount(codes, minlength=len(class_names))
    small = np.flatnonzero(counts < minimum)
    if small.size:
        shown = ", ".join(f"'{class_names[c]}' ({counts[c]})" for c in small[:10])
        more = f" and {small.size - 10} more" if small.size > 10 else ""
        raise InputError(
            f"{small.size} class(es) have fewer than {minimum} samples, too few {why}: "
            f"{shown}{more}"
        )


def stratified_holdout(
    codes: np.ndarray, *, test_size: float = 0.2, seed: int = 0, what: str = "test size"
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, class by class.

    Class ``c`` with ``n_c`` samples sends ``round(test_size * n_c)`` of them to the test side,
    clipped to ``[1, n_c - 1]`` so every class with at least two samples lands on both sides; a
    class with a single sample stays in train. Within a class the choice is a seeded permutation;
    classes draw from the generator in the order their first sample appears, so the split depends
    only on which rows share a class, the row order and the seed, never on what the codes are.

    Returns sorted ``train_idx, test_idx``; ``what`` names the fraction in error messages.
    """
    if not 0.0 < test_size < 1.0:
        raise InputError(f"{what} must be a fraction in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    _, first = np.unique(codes, return_index=True)
    for c in codes[np.sort(first)]:  # classes in order of first appearance, not of their codes
        members = np.flatnonzero(codes == c)
        members = members[rng.permutation(members.size)]
        n_test = int(np.clip(round(test_size * members.size), 1, members.size - 1))
        if members.size < 2:
            n_test = 0
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


def stratified_kfold(
    codes: np.ndarray, *, n_folds: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (scikit-learn's ``StratifiedKFold(shuffle=True, random_state=seed)``).

    Every sample is in exactly one test fold. scikit-learn numbers the classes by first
    appearance before it allocates folds, so the folds, like the holdout, do not depend on
    what the classes are called. Classes must have at least ``n_folds`` samples
    (checked by the caller with :func:`check_class_sizes`).
    """
    from sklearn.model_selection import StratifiedKFold

    if n_folds < 2:
        raise InputError(f"--folds must be at least 2, got {n_folds}")
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [
        (np.sort(train), np.sort(test))
        for train, test in splitter.split(np.zeros(len(codes)), codes)
    ]
