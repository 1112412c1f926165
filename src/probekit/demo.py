"""The demo: the main job on real embeddings shipped inside the package.

``src/probekit/demo_data/spoken_words.npz`` holds two embedding spaces of the same spoken
words (English words synthesised by espeak-ng in many voices, with noise; the test voices are
never heard in training): the GE2E speech encoder as pretrained, and the same encoder after
supervised contrastive (SupCon) fine-tuning of its top layer. ``DATA_CARD.md`` beside it says
how they were made and with which command they are regenerated. :func:`run_demo` judges both
spaces with the dual probe (geometry and figures included) on the given train/test split and
compares them with paired tests: the two-stage framework in one call, no download, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from probekit.errors import InputError

SPACES = ("frozen", "supcon")
TITLES = {"frozen": "GE2E as pretrained (frozen)",
          "supcon": "GE2E after SupCon fine-tuning of its top layer"}
_FILE = "spoken_words.npz"
_KEYS = ("frozen_train", "frozen_test", "supcon_train", "supcon_test", "train_labels",
         "test_labels")


@dataclass(frozen=True)
class DemoData:
    """The shipped spaces: ``spaces[name] = (train, test)`` float16 rows, and the labels."""

    spaces: dict[str, tuple[np.ndarray, np.ndarray]]
    train_labels: np.ndarray
    test_labels: np.ndarray


def data_path(name: str = _FILE) -> Path:
    """Where a file of the demo data lies inside the installed package."""
    return Path(str(resources.files("probekit") / "demo_data" / name))


def load_demo_data() -> DemoData:
    """The two embedding spaces and their labels from the package (read without pickle)."""
    path = data_path()
    if not path.is_file():
        raise InputError(f"the demo data are missing from this installation ({path}); "
                         "reinstall the package")
    with np.load(path, allow_pickle=False) as stored:
        missing = [key for key in _KEYS if key not in stored.files]
        if missing:
            raise InputError(f"{path.name} lacks {', '.join(missing)}: reinstall the package")
        arrays = {key: stored[key] for key in _KEYS}
    spaces = {name: (arrays[f"{name}_train"], arrays[f"{name}_test"]) for name in SPACES}
    return DemoData(spaces, arrays["train_labels"], arrays["test_labels"])


@dataclass(frozen=True)
class DemoResult:
    """The reports of both spaces (``reports[name]``) and their comparison (a DataFrame,
    B = supcon against A = frozen)."""

    reports: dict
    comparison: object


def run_demo(*, seed: int = 0, figures: bool = True, progress=None) -> DemoResult:
    """The dual probe of both shipped spaces (given split, geometry, the 2-D map when
    ``figures``; per-sample predictions kept) and their paired comparison."""
    from probekit.compare import compare_reports
    from probekit.dual import dual_probe

    data = load_demo_data()
    reports = {}
    for name in SPACES:
        train, test = data.spaces[name]
        stage = None if progress is None else (
            lambda label, done, total, name=name: progress(f"{name}: {label}", done, total))
        reports[name] = dual_probe(
            train, data.train_labels, X_test=test, y_test=data.test_labels, seed=seed,
            projection=figures, save_predictions=True, progress=stage)
    comparison = compare_reports(reports["frozen"], reports["supcon"], seed=seed)
    return DemoResult(reports, comparison)
