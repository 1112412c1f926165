"""Hostile inputs that used to end in tracebacks are one-line errors: a manifest cell over the
csv module's field limit, a crop of inf seconds, a Hugging Face directory whose weights file
pickles code."""

import csv
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
soundfile = pytest.importorskip("soundfile")

from click.testing import CliRunner  # noqa: E402

from probekit.cli import cli  # noqa: E402
from tuner.audio import read_manifest  # noqa: E402
from tuner.data import AudioDataset  # noqa: E402
from tuner.encoders import HFAudioEncoder, hf_load_reason  # noqa: E402
from tuner.manifests import esc50  # noqa: E402

HUGE_CELL = "x" * (csv.field_size_limit() + 10)


def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_a_manifest_cell_over_the_csv_field_limit_is_a_one_line_error(tmp_path):
    soundfile.write(tmp_path / "a.wav", np.zeros(160, np.float32), 16000)
    manifest = tmp_path / "huge.csv"
    manifest.write_text(f"path,label\na.wav,x\na.wav,{HUGE_CELL}\n")
    with pytest.raises(ValueError, match=r"huge.csv line 3: .*longer than 131,072 characters"):
        read_manifest(manifest)
    result = CliRunner().invoke(cli, ["embed", str(manifest), "--device", "cpu", "--out",
                                      str(tmp_path / "e")])
    assert "131,072" in one_line_error(result)
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"path,label\na.wav,\x00x\n")
    try:
        read_manifest(nul)  # Python >= 3.11 reads NUL bytes; older ones raise csv.Error
    except ValueError as error:
        assert "nul.csv" in str(error) and "\n" not in str(error)


def test_a_metadata_cell_over_the_field_limit_is_a_one_line_error(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        f"filename,fold,target,category\n1-1-A-0.wav,1,0,{HUGE_CELL}\n")
    with pytest.raises(ValueError, match="esc50.csv line 2: cannot be read as CSV"):
        esc50(tmp_path, tmp_path / "out")
    result = CliRunner().invoke(cli, ["manifest", "esc50", str(tmp_path), "--out",
                                      str(tmp_path / "out")])
    assert "esc50.csv" in one_line_error(result)


@pytest.mark.parametrize("seconds", [math.inf, math.nan, -1.0, 0.0, 1e305])
def test_crops_of_no_finite_length_are_refused(seconds):
    with pytest.raises(ValueError, match="max_seconds") as caught:
        AudioDataset([], np.zeros(0), [], sample_rate=16000, max_seconds=seconds)
    assert "\n" not in str(caught.value)
    AudioDataset([], np.zeros(0), [], sample_rate=16000, max_seconds=1e-9)  # 1 sample


@pytest.mark.parametrize("command", ["finetune", "embed"])
def test_cli_max_seconds_inf_is_a_one_line_error(tmp_path, command):
    soundfile.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "train.csv").write_text("path,label\na.wav,x\na.wav,y\n")
    weights = tmp_path / "w.pt"
    from tuner.encoders import GE2EEncoder

    torch.save({"model_state": GE2EEncoder().state_dict()}, weights)
    result = CliRunner().invoke(cli, [command, str(tmp_path / "train.csv"), "--encoder",
                                      f"ge2e:{weights}", "--max-seconds", "inf", "--device",
                                      "cpu", "--out", str(tmp_path / "out")])
    assert "max_seconds must be a finite number" in one_line_error(result)


def save_tiny_wav2vec2_with_pickled_code(folder):
    transformers = pytest.importorskip("transformers")
    from test_finetune import _save_tiny_wav2vec2

    _save_tiny_wav2vec2(folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"x": Payload()}, folder / "pytorch_model.bin")
    assert transformers is not None


@pytest.mark.slow
def test_a_hugging_face_weights_file_that_pickles_code_is_refused_in_one_line(tmp_path,
                                                                            capfd):
    folder = tmp_path / "evil"
    save_tiny_wav2vec2_with_pickled_code(folder)
    with pytest.raises(ValueError) as caught:
        HFAudioEncoder.from_pretrained(folder)
    message = str(caught.value)
    assert "\n" not in message and "pickles Python objects" in message
    assert "refers to print" in message and str(folder) in message
    (tmp_path / "a.wav").write_bytes(b"")
    soundfile.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "m.csv").write_text("path,label\na.wav,x\n")
    result = CliRunner().invoke(cli, ["embed", str(tmp_path / "m.csv"), "--encoder",
                                      f"hf:{folder}", "--device", "cpu", "--out",
                                      str(tmp_path / "e")])
    assert "pickles Python objects" in one_line_error(result)
    assert "code ran" not in capfd.readouterr().out + result.output


@pytest.mark.slow
def test_hugging_face_load_errors_become_one_line_value_errors(tmp_path):
    folder = tmp_path / "broken"
    pytest.importorskip("transformers")
    from test_finetune import _save_tiny_wav2vec2

    _save_tiny_wav2vec2(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot load a Hugging Face audio model") as caught:
        HFAudioEncoder.from_pretrained(folder)
    assert "\n" not in str(caught.value)
    assert hf_load_reason(RuntimeError("first line\nsecond line")) == "RuntimeError: first line"
