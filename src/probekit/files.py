"""The one way probekit and tuner write a file: atomically.

:func:`write_atomically` writes into a temporary file in the target's folder, flushes it to
disk (``fsync``), gives it the permissions a plain ``open(path, "w")`` would, and renames it over
the target (``os.replace``, atomic on POSIX and Windows), then syncs the folder so the rename
itself survives a crash. A reader, or a process killed at any instant, sees the old file or the
new one, never a mix or a truncated file. Temporary files of writers that were killed (named
``.<target>.<pid>.<random>.tmp``) are removed by the next write to the same target once their
process is gone.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], object]


def write_atomically(path: str | os.PathLike, content: str | bytes | Writer) -> Path:
    """Write ``content`` to ``path`` atomically (see the module docstring).

    ``content`` is text (UTF-8), bytes, or a function that writes into the binary stream it is
    given (``lambda stream: np.save(stream, array)``, ``fig.savefig``, ``torch.save``...).
    Missing parent folders are made. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as stream:
            if isinstance(content, str):
                stream.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                stream.write(content)
            else:
                content(stream)
            stream.flush()
            os.fsync(stream.fileno())
        _usual_permissions(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove ``.<name>.<pid>.<random>.tmp`` files beside ``path`` whose writing process no
    longer runs (a writer killed before its rename); those of live processes stay."""
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        pid = candidate.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return True
    return True


def _usual_permissions(path: Path) -> None:
    """The permissions ``open(path, "w")`` gives under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _sync_folder(folder: Path) -> None:
    """fsync a folder so a rename inside it is durable (a no-op where folders cannot be
    opened, e.g. Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
