"""probekit: how good is an embedding space?

A dual probe (a linear probe for global linear separability and a kNN probe over many k for
local cluster structure) with confidence intervals, in one report.

>>> import probekit
>>> report = probekit.dual_probe(X, y)                        # doctest: +SKIP
>>> print(report.to_markdown())                               # doctest: +SKIP
"""

from probekit.data import load_embeddings, load_labels
from probekit.dual import dual_probe
from probekit.errors import InputError
from probekit.geometry import Geometry, diagnose
from probekit.geometry.cka import cka
from probekit.layers import LayerwiseReport, dual_probe_layers
from probekit.probes.knn import KNNResult, knn_probe
from probekit.probes.linear import LinearResult, linear_probe
from probekit.report import Report
from probekit.version import __version__

__all__ = [
    "__version__",
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
