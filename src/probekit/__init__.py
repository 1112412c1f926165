"""probekit: how good is an embedding space?

A dual probe (a linear probe for global linear separability and a kNN probe over many k for
local cluster structure) with confidence intervals, in one report.

>>> import probekit
>>> report = probekit.dual_probe(X, y)                        # doctest: +SKIP
>>> print(report.to_markdown())                               # doctest: +SKIP
"""

__version__ = "0.1.0"

from probekit.data import load_embeddings, load_labels  # noqa: E402
from probekit.dual import dual_probe  # noqa: E402
from probekit.errors import InputError  # noqa: E402
from probekit.geometry import Geometry, diagnose  # noqa: E402
from probekit.geometry.cka import cka  # noqa: E402
from probekit.layers import LayerwiseReport, dual_probe_layers  # noqa: E402
from probekit.probes.knn import KNNResult, knn_probe  # noqa: E402
from probekit.probes.linear import LinearResult, linear_probe  # noqa: E402
from probekit.report import Report  # noqa: E402

__all__ = [
    "Geometry",
    "InputError",
    "KNNResult",
    "LayerwiseReport",
    "LinearResult",
    "Report",
    "cka",
    "diagnose",
    "dual_probe",
    "dual_probe_layers",
    "knn_probe",
    "linear_probe",
    "load_embeddings",
    "load_labels",
]
