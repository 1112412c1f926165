"""probekit.files.write_atomically: the one way every output is written."""

import os
import subprocess
import sys

import numpy as np
import pytest

from probekit.files import remove_stale_temporaries, write_atomically


def test_text_bytes_and_writers(tmp_path):
    assert write_atomically(tmp_path / "a" / "t.txt", "é\n").read_text(encoding="utf-8") == "é\n"
    assert (tmp_path / "b.bin").exists() is False
    write_atomically(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    write_atomically(tmp_path / "c.npy", lambda stream: np.save(stream, np.arange(3)))
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b.bin", "c.npy"]


def test_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "r.json", "{}")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_crash_while_writing_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")

    def crashes(stream):
        stream.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, crashes)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_crash_between_write_and_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    path.write_text("old")

    def no_rename(*args):
        raise OSError("power failure")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        write_atomically(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_killed_writer_s_temporary_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "r.json"
    code = (f"import os, pathlib; pathlib.Path({str(tmp_path)!r}, "
            f"f'.r.json.{{os.getpid()}}.abcd1234.tmp').write_text('half')")
    subprocess.run([sys.executable, "-c", code], check=True)  # the writer is gone now
    mine = tmp_path / f".r.json.{os.getpid()}.ffff0000.tmp"  # a live writer's: kept
    mine.write_text("in progress")
    assert len(list(tmp_path.glob(".r.json.*.tmp"))) == 2
    write_atomically(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.glob(".r.json.*.tmp")] == [mine.name]
    assert remove_stale_temporaries(path) == []
