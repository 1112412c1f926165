"""tuner writes every file through probekit's one atomic writer (probekit.files): checkpoints,
log.json and manifests. A crash while writing leaves the previous file and no temporary one."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import probekit.files  # noqa: E402
from tuner import manifests  # noqa: E402
from tuner.train import TrainConfig, fit, load_checkpoint, save_checkpoint  # noqa: E402

CPU = {"progress": False, "verbose": False, "device": "cpu"}


def checkpoint(value):
    return {"format": "tuner-checkpoint-1", "encoder": {"w": torch.full((3,), value)},
            "head": {}}


def leftovers(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


class Crash(Exception):
    pass


def test_a_crash_inside_torch_save_keeps_the_old_checkpoint_and_no_temporary(tmp_path,
                                                                             monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", checkpoint(1.0))
    before = path.read_bytes()
    real_save = torch.save

    def half_then_crash(payload, stream, *args, **kwargs):
        real_save(payload, stream, *args, **kwargs)  # a whole checkpoint's bytes written...
        stream.write(b"\0" * 100)
        raise Crash("disk gone")  # ...then the writer dies before the rename

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(Crash):
        save_checkpoint(path, checkpoint(2.0))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert float(load_checkpoint(path)["encoder"]["w"][0]) == 1.0


def test_checkpoints_are_written_by_probekits_writer_with_the_usual_permissions(tmp_path,
                                                                                monkeypatch):
    calls = []
    real = probekit.files.write_atomically

    def spy(path, content):
        calls.append((path.name, callable(content)))
        return real(path, content)

    monkeypatch.setattr(probekit.files, "write_atomically", spy)
    previous = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path / "sub" / "best.pt", checkpoint(1.0))
    finally:
        os.umask(previous)
    assert calls == [("best.pt", True)]
    assert (path.stat().st_mode & 0o777) == 0o640
    assert leftovers(path.parent) == []


def test_a_killed_writers_temporary_is_removed_by_the_next_checkpoint(tmp_path):
    stale = tmp_path / ".last.pt.999999999.abcd1234.tmp"  # no process has this id
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "last.pt", checkpoint(1.0))
    assert leftovers(tmp_path) == []


def test_fit_writes_last_best_and_log_through_the_atomic_writer(tmp_path, monkeypatch):
    written = []
    real = probekit.files.write_atomically
    monkeypatch.setattr(probekit.files, "write_atomically",
                        lambda path, content: written.append(path.name) or real(path, content))
    rng = np.random.default_rng(0)
    y = np.arange(64) % 4
    X = (rng.normal(size=(64, 8)) + 3 * np.eye(8)[y]).astype(np.float32)
    torch.manual_seed(0)
    config = TrainConfig(epochs=2, batch_size=16, m=4, probe_metric="knn_weighted@5",
                         probe_linear=False, **CPU)
    fit(nn.Linear(8, 4), (X, y), (X[:16], y[:16]), config, out_dir=tmp_path)
    assert set(written) == {"best.pt", "last.pt", "log.json"}
    assert written.count("last.pt") == written.count("log.json") == 2
    assert json.loads((tmp_path / "log.json").read_text())["best"]["epoch"] in (1, 2)
    assert leftovers(tmp_path) == []


def test_a_crash_while_writing_log_json_keeps_the_previous_log(tmp_path, monkeypatch):
    from tuner import train

    rng = np.random.default_rng(0)
    y = np.arange(64) % 4
    X = rng.normal(size=(64, 8)).astype(np.float32)
    config = TrainConfig(epochs=2, batch_size=16, m=4, probe_every=0, **CPU)
    real_dumps, calls = json.dumps, []

    def dumps_then_crash_on_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Crash("killed")
        return real_dumps(*args, **kwargs)

    monkeypatch.setattr(train.json, "dumps", dumps_then_crash_on_the_second_epoch)
    with pytest.raises(Crash):
        fit(nn.Linear(8, 4), (X, y), config=config, out_dir=tmp_path)
    monkeypatch.undo()
    log = json.loads((tmp_path / "log.json").read_text())
    assert [record["epoch"] for record in log["epochs"]] == [1]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2  # written before the log
    assert leftovers(tmp_path) == []


def test_manifests_are_written_by_probekits_writer(tmp_path, monkeypatch):
    written = []
    real = probekit.files.write_atomically
    monkeypatch.setattr(probekit.files, "write_atomically",
                        lambda path, content: written.append(path) or real(path, content))
    target = tmp_path / "new" / "train.csv"
    assert manifests.write_manifest(target, [(tmp_path / "a.wav", "dog")]) == 1
    assert written == [target]
    assert target.read_text() == f"path,label\n{tmp_path / 'a.wav'},dog\n"


def test_tuner_imports_no_writer_of_its_own():
    """No tuner module renames files itself or reaches for probekit.report's writer."""
    from pathlib import Path

    for source in sorted((Path(manifests.__file__).parent).glob("*.py")):
        text = source.read_text()
        assert "os.replace" not in text and "probekit.report import" not in text, source.name
