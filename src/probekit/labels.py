"""Labels as integer codes, and what identifies a test set.

Classes are numbered in order of first appearance, so that every computation depends only on
which rows share a class, their order and the seed: renaming the classes changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelEncoding:
    """Labels as integer codes, numbered in order of first appearance.

    ``classes[:n_train_classes]`` are the classes seen in training (the only ones a probe can
    predict) in the order their first sample appears; classes that occur only in the test
    labels follow them, in the order they first appear there. Numbering by appearance, not by
    name, makes every computation depend only on which rows share a class, their order and
    the seed: renaming the classes changes no split and no number. Reports and figures list
    the classes in :attr:`display_order` (by name) instead.
    """

    train: np.ndarray
    test: np.ndarray | None
    classes: np.ndarray
    n_train_classes: int

    @property
    def class_names(self) -> list:
        """Classes as plain Python values (``int`` or ``str``), ready for JSON."""
        return [value.item() if hasattr(value, "item") else value for value in self.classes]

    @property
    def display_order(self) -> np.ndarray:
        """Codes in the order people read them: the training classes sorted by name, then
        the test-only classes sorted by name (``classes[display_order]``)."""
        n = self.n_train_classes
        return np.concatenate([np.argsort(self.classes[:n], kind="stable"),
                               n + np.argsort(self.classes[n:], kind="stable")]).astype(np.int64)


def appearance_codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)``: the distinct labels in order of first appearance and each label's
    position among them (``classes[codes] == labels``)."""
    sorted_classes, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # sorted class -> rank of its first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return sorted_classes[order], rank[inverse.ravel()].astype(np.int64)


def encode_labels(y_train: np.ndarray, y_test: np.ndarray | None = None) -> LabelEncoding:
    """Map labels to codes ``0..C-1`` by first appearance, train classes first (see
    :class:`LabelEncoding`).

    When one side holds numbers and the other strings, both are compared as strings (so the
    integer 3 and the text "3" are one class)."""
    if y_test is not None and _label_kind(y_train) != _label_kind(y_test):
        y_train, y_test = y_train.astype(str), y_test.astype(str)  # ints from .npy, text
    train_classes, train_codes = appearance_codes(y_train)
    if y_test is None:
        return LabelEncoding(train_codes, None, train_classes, len(train_classes))
    test_classes, test_codes = appearance_codes(y_test)
    unseen = ~np.isin(test_classes, train_classes)
    classes = np.concatenate([train_classes, test_classes[unseen]]) if unseen.any() \
        else train_classes
    by_name = np.argsort(classes, kind="stable")
    position = by_name[np.searchsorted(classes[by_name], test_classes)]
    return LabelEncoding(train_codes, position[test_codes].astype(np.int64), classes,
                         len(train_classes))


def _label_kind(y: np.ndarray) -> str:
    return "string" if y.dtype.kind in "US" else "number"


def test_set_hash(labels: np.ndarray, class_names, rows: np.ndarray | None = None) -> str:
    """SHA-256 of what identifies a test set: its labels in order (class codes, or a bool tag
    matrix packed to bits), the class or tag names, and the rows drawn (None for a given test
    set). Two runs may be paired only when their hashes agree."""
    labels = np.asarray(labels)
    data = (np.packbits(labels, axis=1) if labels.dtype == bool
            else np.ascontiguousarray(labels, dtype="<i8"))
    digest = hashlib.sha256(data.tobytes())
    digest.update(repr(list(class_names)).encode())
    if rows is not None:
        digest.update(np.ascontiguousarray(rows, dtype="<i8").tobytes())
    return digest.hexdigest()
