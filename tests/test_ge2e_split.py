"""GE2E split into a frozen, cached front end and a trainable top: same embeddings, and the
top trains through tuner.train.fit on cached sequences. On the CPU, also on a machine with a
GPU (the 1e-5 tolerances are float32's)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from tuner.data import SequenceDataset, pad_batch  # noqa: E402
from tuner.embed import cache_sequences, embed  # noqa: E402
from tuner.encoders import GE2EEncoder, last_states, split_ge2e, split_lstm  # noqa: E402
from tuner.train import TrainConfig, fit  # noqa: E402


def waves(count=6, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.05 * rng.normal(size=int(n))).astype(np.float32)
            for n in rng.integers(3000, 12000, size=count)]


def test_split_lstm_computes_the_same_sequence():
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, 3, batch_first=True)
    lower, upper = split_lstm(lstm, 1)
    x = torch.randn(2, 9, 5)
    torch.testing.assert_close(upper(lower(x)[0])[0], lstm(x)[0])
    with pytest.raises(ValueError, match="n_lower"):
        split_lstm(lstm, 3)


def test_last_states_equal_a_packed_lstm_in_value_and_gradient():
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, 2, batch_first=True)
    padded = torch.randn(4, 9, 5)
    lengths = torch.tensor([9, 3, 1, 6])
    for b, length in enumerate(lengths):
        padded[b, length:] = 100.0  # padding of any value must not matter
    ours = last_states(lstm, padded, lengths)
    (ours ** 2).sum().backward()
    ours_grad = [p.grad.clone() for p in lstm.parameters()]
    lstm.zero_grad()
    packed = nn.utils.rnn.pack_padded_sequence(padded, lengths, batch_first=True,
                                               enforce_sorted=False)
    _, (hidden, _) = lstm(packed)
    torch.testing.assert_close(ours, hidden[-1])
    (hidden[-1] ** 2).sum().backward()
    for mine, reference in zip(ours_grad, (p.grad for p in lstm.parameters()), strict=True):
        torch.testing.assert_close(mine, reference)
    torch.testing.assert_close(last_states(lstm, padded[:1], None), hidden[-1][:1])
    with pytest.raises(ValueError, match="lengths"):
        last_states(lstm, padded, torch.tensor([9, 3, 0, 6]))


def test_front_end_and_top_equal_the_whole_encoder_and_cache_per_length():
    torch.manual_seed(0)
    encoder = GE2EEncoder().eval()
    front, top = split_ge2e(encoder, 2)
    assert not any(p.requires_grad for p in front.parameters())
    clips = waves()
    inputs = encoder.preprocess(clips)
    with torch.no_grad():
        expected = encoder(**inputs)
        torch.testing.assert_close(top(front(**inputs), inputs["lengths"]), expected)
    dataset = _WaveDataset(clips)
    cached = cache_sequences(front, dataset, batch_size=4, device="cpu")
    assert [len(seq) for seq in cached] == inputs["lengths"].tolist()
    sequences = SequenceDataset(cached, np.zeros(len(cached), np.int64), ["x"])
    np.testing.assert_allclose(embed(top, sequences, batch_size=4, device="cpu"),
                               expected.numpy(), atol=1e-5)
    batch, targets = pad_batch([sequences[0], sequences[1]])
    assert batch["frames"].shape[0] == 2 and targets.shape == (2,)


@pytest.mark.slow
def test_the_top_trains_on_cached_sequences():
    torch.manual_seed(0)
    front, top = split_ge2e(GE2EEncoder(), 2)
    clips = waves(24, seed=1)
    labels = np.arange(24) % 3
    cached = cache_sequences(front, _WaveDataset(clips), batch_size=8, device="cpu")
    data = SequenceDataset(cached, labels, ["a", "b", "c"])
    before = {k: v.clone() for k, v in top.state_dict().items()}
    result = fit(top, data, config=TrainConfig(epochs=2, batch_size=12, m=4, lr=1e-3,
                                               probe_every=0, progress=False, verbose=False,
                                               device="cpu"))
    assert np.isfinite(result.history[-1]["loss"])
    assert not torch.equal(top.state_dict()["lstm.weight_hh_l0"], before["lstm.weight_hh_l0"])


class _WaveDataset(torch.utils.data.Dataset):
    """In-memory waveforms with the audio collate (what AudioDataset yields)."""

    def __init__(self, clips):
        self.clips = clips

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        return self.clips[index], torch.tensor(0)

    def collate(self, encoder):
        from tuner.data import WaveformCollate

        return WaveformCollate(encoder.preprocess)
