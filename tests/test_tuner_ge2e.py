"""GE2E's blocks (three LSTM layers and the output layer: --train-last N works), loading of
state dicts in the earlier one-LSTM layout, and Resemblyzer's windowed clip embedding."""

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from torch import nn  # noqa: E402

from conftest import import_resemblyzer, synthetic_speechlike  # noqa: E402
from probekit.cli import cli  # noqa: E402
from tuner.audio import normalize_volume  # noqa: E402
from tuner.encoders import (  # noqa: E402
    GE2EEncoder,
    block_list,
    encoder_from_spec,
    freeze_all_but_last,
    ge2e_partials,
    split_ge2e,
    stack_lstms,
)
from tuner.train import CHECKPOINT_FORMAT, load_encoder  # noqa: E402

needs_ge2e = pytest.mark.skipif(importlib.util.find_spec("resemblyzer") is None,
                                reason="the GE2E weights ship in the resemblyzer wheel")


def legacy_state(seed=0):
    """A state dict in the layout of Resemblyzer and of earlier versions of GE2EEncoder (one
    3-layer ``lstm`` and ``linear``), and the modules it came from."""
    torch.manual_seed(seed)
    lstm, linear = nn.LSTM(40, 256, 3, batch_first=True), nn.Linear(256, 256)
    state = {**{f"lstm.{k}": v for k, v in lstm.state_dict().items()},
             **{f"linear.{k}": v for k, v in linear.state_dict().items()}}
    return state, lstm, linear


def reference_embedding(lstm, linear, mels):
    """What the earlier one-LSTM encoder computed (unpadded input)."""
    _, (hidden, _) = lstm(mels)
    raw = torch.relu(linear(hidden[-1]))
    return raw / raw.norm(dim=1, keepdim=True)


# --- blocks and --train-last -----------------------------------------------------------------

def test_blocks_are_three_lstm_layers_and_the_output_layer():
    encoder = GE2EEncoder()
    blocks = block_list(encoder)
    assert blocks is encoder.blocks and len(blocks) == 4
    assert all(isinstance(b, nn.LSTM) and b.num_layers == 1 for b in list(blocks)[:3])
    assert isinstance(blocks[3].linear, nn.Linear)
    assert [b.input_size for b in list(blocks)[:3]] == [40, 256, 256]


@pytest.mark.slow
@needs_ge2e
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4])
def test_freeze_all_but_last_n_blocks_of_pretrained_ge2e(n):
    encoder = GE2EEncoder.pretrained()
    trainable = freeze_all_but_last(encoder, n)
    names = {name for name, p in encoder.named_parameters() if p.requires_grad}
    expected = {name for name, _ in encoder.named_parameters()
                if name.startswith(tuple(f"blocks.{i}." for i in range(4 - n, 4)))}
    assert names == expected
    per_block = [sum(p.numel() for p in b.parameters()) for b in encoder.blocks]
    assert per_block == [4 * 256 * (40 + 256 + 2), 4 * 256 * (256 + 256 + 2),
                         4 * 256 * (256 + 256 + 2), 256 * 256 + 256]
    assert trainable == sum(per_block[4 - n:])
    with pytest.raises(ValueError, match=r"n_blocks must be in \[0, 4\]"):
        freeze_all_but_last(encoder, 5)


@pytest.mark.slow
@needs_ge2e
def test_finetune_cli_trains_only_the_last_block_of_ge2e(tmp_path):
    from test_finetune import write_clips

    manifest = write_clips(tmp_path / "clips", "tiny", 4, seed=0)
    out = tmp_path / "tuned"
    result = CliRunner().invoke(cli, [
        "finetune", str(manifest), "--encoder", "ge2e", "--train-last", "1", "--epochs", "1",
        "--batch-size", "12", "--m", "4", "--lr", "1e-2", "--probe-every", "0",
        "--device", "cpu", "--out", str(out), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert np.load(out / "tiny.npy").shape == (12, 256)
    tuned = torch.load(out / "last.pt", weights_only=True)["encoder"]
    original = GE2EEncoder.pretrained().state_dict()
    changed = {name for name, value in tuned.items() if not torch.equal(value, original[name])}
    assert changed == {"blocks.3.linear.weight", "blocks.3.linear.bias"}


# --- state dicts of the earlier layout ---------------------------------------------------------

def test_state_dicts_of_the_earlier_layout_load_and_compute_the_same():
    state, lstm, linear = legacy_state()
    encoder = GE2EEncoder()
    encoder.load_state_dict(state, strict=True)
    mels = torch.rand(2, 30, 40)
    with torch.no_grad():
        torch.testing.assert_close(encoder(mels), reference_embedding(lstm, linear, mels))
    again = GE2EEncoder()
    again.load_state_dict(encoder.state_dict(), strict=True)  # the new layout loads too
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 encoder.state_dict().values(), strict=True))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        GE2EEncoder().load_state_dict({**state, "lstm.weight_ih_l7": torch.zeros(1)})


def test_checkpoints_of_the_earlier_layout_load_with_load_encoder(tmp_path):
    state, lstm, linear = legacy_state(1)
    head = nn.Identity()
    path = tmp_path / "best.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 3, "encoder": state, "head": {},
                "config": {}, "classes": ["a"], "best_epoch": 3, "best_score": 0.5}, path)
    encoder = GE2EEncoder()
    payload = load_encoder(encoder, path, head)
    assert payload["epoch"] == 3
    mels = torch.rand(1, 12, 40)
    with torch.no_grad():
        torch.testing.assert_close(encoder(mels), reference_embedding(lstm, linear, mels))
    # nested under a parent module, as fit's resume and restore_best load it
    parent = nn.Module()
    parent.encoder = GE2EEncoder()
    parent.load_state_dict({f"encoder.{k}": v for k, v in state.items()}, strict=True)
    torch.testing.assert_close(parent.encoder.blocks[2].weight_hh_l0, lstm.weight_hh_l2)


@pytest.mark.slow
@needs_ge2e
def test_embed_cli_loads_a_checkpoint_of_the_earlier_layout(tmp_path):
    from test_finetune import write_clips

    manifest = write_clips(tmp_path / "clips", "few", 2, seed=3)
    pretrained = GE2EEncoder.pretrained()
    old_layout = {}
    for index, layer in enumerate(pretrained.lstm_layers):
        old_layout |= {f"lstm.{k.removesuffix('_l0')}_l{index}": v
                       for k, v in layer.state_dict().items()}
    old_layout |= {f"linear.{k}": v for k, v in pretrained.output.linear.state_dict().items()}
    checkpoint = tmp_path / "old.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 1, "encoder": old_layout, "head": {},
                "config": {}, "classes": [], "best_epoch": None, "best_score": None},
               checkpoint)
    runner = CliRunner()
    for args, folder in ([["--checkpoint", str(checkpoint)], "a"], [[], "b"]):
        result = runner.invoke(cli, ["embed", str(manifest), *args, "--device", "cpu",
                                     "--out", str(tmp_path / folder), "-q"])
        assert result.exit_code == 0, (result.output, result.exception)
    np.testing.assert_allclose(np.load(tmp_path / "a" / "few.npy"),
                               np.load(tmp_path / "b" / "few.npy"), atol=1e-6)


def test_split_ge2e_and_stack_lstms_keep_top_of_front_equal_to_the_encoder():
    torch.manual_seed(0)
    encoder = GE2EEncoder().eval()
    waves = [synthetic_speechlike(n, seed) for seed, n in enumerate((3000, 9000, 5000))]
    inputs = encoder.preprocess(waves)
    with torch.no_grad():
        expected = encoder(**inputs)
        for n_frozen in (1, 2):
            front, top = split_ge2e(encoder, n_frozen)
            torch.testing.assert_close(top(front(**inputs), inputs["lengths"]), expected)
        stacked = stack_lstms(encoder.lstm_layers)
        sequence = inputs["mels"]
        for layer in encoder.lstm_layers:
            sequence, _ = layer(sequence)
        torch.testing.assert_close(stacked(inputs["mels"])[0], sequence)
    with pytest.raises(ValueError, match="n_frozen"):
        split_ge2e(encoder, 3)


def test_seeded_random_initialisation_is_that_of_one_three_layer_lstm():
    """Three single-layer LSTMs draw their weights in the order one 3-layer LSTM did."""
    torch.manual_seed(5)
    lstm, linear = nn.LSTM(40, 256, 3, batch_first=True), nn.Linear(256, 256)
    torch.manual_seed(5)
    encoder = GE2EEncoder()
    torch.testing.assert_close(encoder.blocks[1].weight_ih_l0, lstm.weight_ih_l1)
    torch.testing.assert_close(encoder.output.linear.bias, linear.bias)


# --- Resemblyzer's windowed embedding ----------------------------------------------------------

LENGTHS = [0, 1, 159, 160, 3000, 16000, 25440, 25600, 26000, 28000, 37760, 40000, 60000, 97531]


def test_partials_equal_resemblyzers_slices():
    resemblyzer = import_resemblyzer()
    for n_samples in LENGTHS:
        wav_slices, mel_slices = resemblyzer.VoiceEncoder.compute_partial_slices(
            n_samples, 1.3, 0.75)
        starts, padded = ge2e_partials(n_samples)
        assert starts.tolist() == [s.start for s in mel_slices], n_samples
        assert padded == wav_slices[-1].stop
    with pytest.raises(ValueError, match="min_coverage"):
        ge2e_partials(100, min_coverage=0)
    with pytest.raises(ValueError, match="rate"):
        ge2e_partials(100, rate=0.1)


@pytest.mark.slow
@needs_ge2e
def test_windowed_embedding_equals_resemblyzers_embed_utterance():
    resemblyzer = import_resemblyzer()
    reference = resemblyzer.VoiceEncoder("cpu", verbose=False)
    ours = encoder_from_spec("ge2e-windows")
    assert ours.windows and not GE2EEncoder.pretrained().windows
    waves = [synthetic_speechlike(n, seed) for seed, n in
             enumerate((3000, 16000, 25600, 28000, 60000))]
    with torch.no_grad():
        batched = ours(**ours.preprocess(waves)).numpy()
    for row, wave in enumerate(waves):
        # embed_utterance takes a preprocessed waveform: volume-normalised, no VAD trimming
        expected = reference.embed_utterance(normalize_volume(wave))
        np.testing.assert_allclose(batched[row], expected, atol=2e-5)
        with torch.no_grad():
            alone = ours(**ours.preprocess([wave])).numpy()[0]
        np.testing.assert_allclose(alone, batched[row], atol=2e-5)
    counts = ours.preprocess(waves)["window_counts"].tolist()
    assert counts == [1, 1, 1, 1, 4]


def test_windowed_inputs_and_gradients_without_weights():
    torch.manual_seed(0)
    encoder = GE2EEncoder(windows=True)
    waves = [synthetic_speechlike(2000, 0), synthetic_speechlike(44000, 1)]
    inputs = encoder.preprocess(waves)
    assert set(inputs) == {"mels", "lengths", "window_starts", "window_counts"}
    assert inputs["window_counts"].tolist() == [1, 3]
    assert inputs["window_starts"].tolist() == [[0, 0, 0], [0, 77, 154]]
    assert inputs["mels"].shape[1] >= 154 + 160
    embeddings = encoder(**inputs)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2))
    embeddings.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in encoder.parameters())
    # the mean of the per-window embeddings, normalised
    with torch.no_grad():
        windows = torch.stack([inputs["mels"][1, s:s + 160] for s in (0, 77, 154)])
        partial = encoder(windows)
        mean = partial.mean(dim=0)
        torch.testing.assert_close(encoder(**inputs)[1], mean / mean.norm())
