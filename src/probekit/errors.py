"""The one exception type probekit raises for bad input.

Every check at the door raises :class:`InputError` with a message that fits on one line and says
what is wrong and, where it helps, what to do. The CLI prints the message and exits with status 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a file, an array, a label vector or a parameter).

    Subclasses :class:`ValueError` so code that already catches ``ValueError`` keeps working.
    """


DISTRIBUTION = "probekit-dual"
"""The name to ``pip install`` (the import names are ``probekit`` and ``tuner``): ``probekit``
and ``tuner`` on the package index are other projects."""


def install_hint(extra: str | None = None) -> str:
    """The pip command that installs this distribution, with ``extra`` when given:
    ``pip install 'probekit-dual[umap]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'" if extra else f"pip install {DISTRIBUTION}"
