"""The one exception type probekit raises for bad input.

Every check at the door raises :class:`InputError` with a message that fits on one line and says
what is wrong and, where it helps, what to do. The CLI prints the message and exits with status 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a file, an array, a label vector or a parameter).

    Subclasses :class:`ValueError` so code that already catches ``ValueError`` keeps working.
    """
