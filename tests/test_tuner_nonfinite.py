"""Nothing non-finite goes in or comes out: bad audio, settings, diverging losses, NaN weights
and NaN embeddings are one-line errors, and no NaN embedding or checkpoint is ever written."""

import importlib.util
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
soundfile = pytest.importorskip("soundfile")

from click.testing import CliRunner  # noqa: E402
from torch import nn  # noqa: E402

from probekit.cli import cli  # noqa: E402
from tuner.adapter import Adapter, AdapterConfig, apply_adapter, train_adapter  # noqa: E402
from tuner.audio import load_audio  # noqa: E402
from tuner.data import ArrayDataset, AudioDataset  # noqa: E402
from tuner.embed import embed  # noqa: E402
from tuner.encoders import GE2EEncoder  # noqa: E402
from tuner.finite import (  # noqa: E402
    MAX_SAMPLE_MAGNITUDE,
    NonFiniteError,
    TrainingDiverged,
    check_waveform,
    describe_rows,
    nonfinite_tensors,
)
from tuner.losses import MIN_TEMPERATURE, SupConLoss  # noqa: E402
from tuner.train import (  # noqa: E402
    TrainConfig,
    check_config,
    fit,
    load_checkpoint,
    save_checkpoint,
)

QUIET = {"progress": False, "verbose": False, "device": "cpu"}  # the CPU, also beside a GPU
needs_ge2e = pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                                reason="the GE2E weights ship in the resemblyzer wheel")


def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def float_wav(path, samples, rate=16000):
    """A 32-bit float WAV: it stores any float, NaN and inf included."""
    soundfile.write(path, np.asarray(samples, dtype=np.float32), rate, subtype="FLOAT")
    return path


def clips_with_one_bad(folder, bad_value, n_good=12):
    """``n_good`` clips of three classes and one whose middle sample is ``bad_value``."""
    from test_finetune import write_clips

    manifest = write_clips(folder, "train", n_good // 3, seed=0)
    wave = 0.1 * np.sin(np.arange(8000) / 5.0)
    wave[4000] = bad_value
    float_wav(folder / "bad.wav", wave)
    manifest.write_text(manifest.read_text() + "bad.wav,chirp,v0\n")
    return manifest


# --- audio ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e30, 2 * MAX_SAMPLE_MAGNITUDE])
def test_decoding_refuses_nonfinite_and_absurd_samples(tmp_path, value):
    wave = np.full(1600, 0.1)
    wave[10] = value
    path = float_wav(tmp_path / "bad.wav", wave)
    with pytest.raises(ValueError, match="bad.wav") as caught:
        load_audio(path, 16000)
    assert "\n" not in str(caught.value) and isinstance(caught.value, NonFiniteError)
    with pytest.raises(ValueError, match="bad.wav"):
        load_audio(path, 8000)  # also when resampling
    fine = float_wav(tmp_path / "loud.wav", np.full(1600, 3.0))  # clipped, but audio
    assert load_audio(fine, 16000).max() == 3.0


def test_in_memory_waveforms_are_checked_by_preprocess():
    encoder = GE2EEncoder()
    with pytest.raises(ValueError, match="waveform 1 of the batch holds 1 NaN"):
        encoder.preprocess([np.zeros(400, np.float32), np.array([0.0, np.nan], np.float32)])
    check_waveform(np.zeros(0), "empty")  # nothing to refuse


@pytest.mark.slow
@needs_ge2e
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_finetune_with_one_bad_clip_fails_in_one_line_and_writes_nothing_nonfinite(tmp_path,
                                                                                  value):
    manifest = clips_with_one_bad(tmp_path / "clips", value)
    out = tmp_path / "tuned"
    result = CliRunner().invoke(cli, [
        "finetune", str(manifest), "--epochs", "1", "--batch-size", "12", "--m", "4",
        "--probe-every", "0", "--device", "cpu", "--out", str(out), "-q"])
    line = one_line_error(result)
    assert "bad.wav" in line and "NaN or infinite" in line
    assert not list(out.glob("*.npy")) and not (out / "best.pt").exists()
    if (out / "log.json").exists():
        assert all(math.isfinite(r["loss"]) for r in json.loads(
            (out / "log.json").read_text())["epochs"])


@pytest.mark.slow
@needs_ge2e
@pytest.mark.parametrize("value", [math.nan, math.inf, 1e30])
def test_embed_of_a_bad_clip_fails_in_one_line(tmp_path, value):
    manifest = clips_with_one_bad(tmp_path / "clips", value, n_good=3)
    result = CliRunner().invoke(cli, ["embed", str(manifest), "--device", "cpu", "--out",
                                      str(tmp_path / "e"), "-q"])
    assert "bad.wav" in one_line_error(result)
    assert not (tmp_path / "e" / "train.npy").exists()


# --- settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"lr": math.inf}, "lr must be a finite number"),
    ({"lr": math.nan}, "lr must be a finite number"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"weight_decay": math.inf}, "weight_decay must be a finite number"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ({"warmup_epochs": math.inf}, "warmup_epochs must be a finite number"),
    ({"temperature": 1e-300}, "temperature must be a finite number >= 0.0001"),
    ({"temperature": math.inf}, "temperature"),
    ({"clip_norm": math.nan}, "clip_norm must be positive"),
])
def test_configs_that_cannot_train_are_refused(change, message):
    with pytest.raises(ValueError, match=message) as caught:
        check_config(TrainConfig(**change))
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(MIN_TEMPERATURE / 2)
    SupConLoss(MIN_TEMPERATURE)


@pytest.mark.parametrize("args", [["--lr", "inf"], ["--weight-decay", "inf"],
                                  ["--temperature", "1e-300"]])
def test_finetune_cli_refuses_nonfinite_settings(tmp_path, args):
    from test_finetune import write_clips

    manifest = write_clips(tmp_path / "clips", "few", 4, seed=0)
    # a random GE2E checkpoint: the settings are checked before any weight matters
    weights = tmp_path / "ge2e.pt"
    torch.save({"model_state": GE2EEncoder().state_dict()}, weights)
    result = CliRunner().invoke(cli, ["finetune", str(manifest), "--encoder", f"ge2e:{weights}",
                                      "--epochs", "1", "--batch-size", "12", *args,
                                      "--device", "cpu", "--out", str(tmp_path / "t"), "-q"])
    assert args[0].lstrip("-").replace("-", "_") in one_line_error(result)
    assert not (tmp_path / "t" / "last.pt").exists()


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "lr must be a finite number"),
    (["--temperature", "1e-300"], "temperature must be a finite number"),
    (["--lr", "1e30"], "training diverged: the loss is not finite"),
])
def test_tune_cli_refuses_nonfinite_settings_and_divergence(tmp_path, args, message):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(64, 8)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(64) % 4)
    result = CliRunner().invoke(cli, ["tune", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                                      "--epochs", "3", "--batch-size", "16", *args,
                                      "--out", str(tmp_path / "t"), "-q"])
    assert message in one_line_error(result)
    assert not (tmp_path / "t" / "x.tuned.npy").exists()


# --- divergence during training ------------------------------------------------------------------

class Bomb(nn.Module):
    """A linear encoder whose training forward pass number ``at`` (1-based) outputs NaN."""

    dim = 8

    def __init__(self, at):
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.at, self.calls = nn.Linear(16, 8), at, 0

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = out * math.nan
        return out


class _NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


class GradientBomb(Bomb):
    """A finite forward pass whose gradient is NaN at training pass ``at``: the loss stays
    finite, the weights after that step do not."""

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = _NaNGradient.apply(out)
        return out


def rows(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    return (rng.normal(size=(n, 16)) + 2 * np.eye(16)[y]).astype(np.float32), y


def test_a_nonfinite_loss_stops_training_and_keeps_the_last_good_checkpoints(tmp_path):
    X, y = rows()
    config = TrainConfig(epochs=3, batch_size=16, m=4, lr=1e-2, head_dim=None,
                         probe_metric="knn_weighted@5", probe_linear=False, **QUIET)
    with pytest.raises(TrainingDiverged) as caught:
        fit(Bomb(at=6), (X, y), (X[:32], y[:32]), config, out_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, ValueError)
    assert "epoch 2, step 2 of 4 (global step 6)" in message
    assert "last.pt keeps epoch 1" in message and "best.pt epoch 1" in message
    for name in ("last.pt", "best.pt"):
        payload = load_checkpoint(tmp_path / name)  # finite, so it loads
        assert payload["epoch"] == 1
    log = json.loads((tmp_path / "log.json").read_text())
    assert [r["epoch"] for r in log["epochs"]] == [1]
    assert math.isfinite(log["epochs"][0]["loss"])


def test_nonfinite_weights_after_a_finite_loss_stop_training_before_any_checkpoint(tmp_path):
    X, y = rows()
    config = TrainConfig(epochs=2, batch_size=16, m=4, lr=1e-2, head_dim=None,
                         probe_every=0, **QUIET)
    with pytest.raises(TrainingDiverged, match=r"at the end of epoch 1: 2 weight tensor\(s\) "
                                               r"hold NaN .*no checkpoint was written"):
        fit(GradientBomb(at=4), (X, y), config=config, out_dir=tmp_path)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_checkpoints_with_nonfinite_tensors_are_neither_written_nor_loaded(tmp_path):
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 1] = math.nan
    good = {"format": "tuner-checkpoint-1", "encoder": nn.Linear(3, 2).state_dict(),
            "head": {}}
    save_checkpoint(tmp_path / "last.pt", good)
    with pytest.raises(NonFiniteError, match=r"encoder.weight\); refusing to save it"):
        save_checkpoint(tmp_path / "last.pt", {**good, "encoder": model.state_dict()})
    load_checkpoint(tmp_path / "last.pt")  # the good one is still there
    torch.save({**good, "encoder": model.state_dict()}, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"checkpoint nan.pt holds NaN or infinite values in 1 "
                                         r"tensor\(s\) \(encoder.weight\)"):
        load_checkpoint(tmp_path / "nan.pt")
    assert nonfinite_tensors({"a": [torch.ones(2), {"b": torch.tensor([math.inf])}],
                              "n": torch.tensor([1], dtype=torch.int64)}) == ["a.1.b"]


def test_ge2e_weights_with_nan_are_refused(tmp_path):
    state = GE2EEncoder().state_dict()
    state["blocks.3.linear.bias"][0] = math.nan
    torch.save({"model_state": state}, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="NaN or infinite values .*blocks.3.linear.bias"):
        GE2EEncoder.pretrained(tmp_path / "nan.pt")


@pytest.mark.slow
@needs_ge2e
def test_embed_cli_refuses_a_checkpoint_with_nan_weights(tmp_path):
    from test_finetune import write_clips

    manifest = write_clips(tmp_path / "clips", "few", 1, seed=0)
    state = GE2EEncoder.pretrained().state_dict()
    state = {name: torch.full_like(value, math.nan) for name, value in state.items()}
    torch.save({"format": "tuner-checkpoint-1", "encoder": state, "head": {}},
               tmp_path / "nan.pt")
    result = CliRunner().invoke(cli, ["embed", str(manifest), "--checkpoint",
                                      str(tmp_path / "nan.pt"), "--device", "cpu", "--out",
                                      str(tmp_path / "e")])
    assert "NaN or infinite" in one_line_error(result)
    assert not (tmp_path / "e" / "few.npy").exists()


# --- embeddings ----------------------------------------------------------------------------------

class LogEncoder(nn.Module):
    """Embeds a waveform by the log of its first sample: NaN for a negative one, -inf for 0."""

    sample_rate = 16000

    def preprocess(self, waves):
        return {"first": torch.tensor([float(wave[0]) for wave in waves])}

    def forward(self, first):
        return torch.log(first)[:, None].expand(-1, 3)


class InMemoryClips(AudioDataset):
    """Waveforms held in memory under file names clip0.wav, clip1.wav, ..."""

    def __init__(self, waves):
        super().__init__([f"clip{i}.wav" for i in range(len(waves))],
                         np.zeros(len(waves), np.int64), ["x"], sample_rate=16000)
        self.waves = waves

    def __getitem__(self, index):
        return self.waves[index], torch.tensor(0)


def test_embed_refuses_nonfinite_rows_and_names_the_items():
    waves = [np.full(10, value, np.float32) for value in (1.0, -1.0, 2.0, 0.0, 3.0)]
    data = InMemoryClips(waves)
    with pytest.raises(NonFiniteError) as caught:
        embed(LogEncoder(), data, batch_size=2, device="cpu")
    assert str(caught.value).startswith(
        "2 of 5 embeddings hold NaN or infinite values: rows 1, 3 (clip1.wav, clip3.wav)")
    subset = torch.utils.data.Subset(data, [3, 4])
    with pytest.raises(NonFiniteError, match=r"row 0 \(clip3.wav\)"):
        embed(LogEncoder(), subset, device="cpu")
    X = np.ones((7, 3), np.float32)
    X[6, 2] = math.inf
    with pytest.raises(NonFiniteError, match="1 of 7 embeddings .*: row 6;"):
        embed(nn.Identity(), ArrayDataset(X, np.zeros(7)), device="cpu")
    assert describe_rows(list(range(9))) == "rows 0, 1, 2, 3, 4 and 4 more"


def test_adapter_never_returns_nonfinite_rows():
    adapter = Adapter(4)
    X = np.ones((3, 4), np.float32)
    X[1, 0] = math.nan
    with pytest.raises(NonFiniteError, match=r"1 of 3 tuned embeddings .*row 1"):
        apply_adapter(adapter, X)
    with torch.no_grad():
        adapter.mlp[-1].weight.fill_(1e30)
    with pytest.raises(NonFiniteError, match="overflows float32"):
        apply_adapter(adapter, np.full((2, 4), 1e10, np.float32))
    with pytest.raises(NonFiniteError, match="training rows"):
        train_adapter(np.full((8, 4), 1e300), np.arange(8) % 2, AdapterConfig(epochs=1))
