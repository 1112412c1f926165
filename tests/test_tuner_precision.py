"""Mixed precision on the CPU: what bf16 cannot hold stays in float32 under autocast.

torch's CPU autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``) casts convolutions,
linear layers and (through oneDNN) LSTMs to bf16 as CUDA autocast does, so the float32 guards of
tuner.encoders are tested here without a GPU: CREPE's clip mean (sum of frame features and frame
counts in float32), GE2E's LSTMs (outside autocast altogether) and the mean of ``pool``.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from conftest import synthetic_speechlike  # noqa: E402
from tuner.encoders import (  # noqa: E402
    CrepeEncoder,
    GE2EEncoder,
    freeze_all_but_last,
    pool,
    split_ge2e,
)

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}
# bf16 keeps 8 significant bits: one rounding is off by at most 2**-9 relative, and a frame
# feature after five bf16 convolutions by a few of those. A clip mean whose only bf16 error is
# its frame features is as close as they are: within four units of 2**-8, relative (L2).
BF16_TOLERANCE = 4 * 2.0**-8


def relative_error(value, reference):
    return float((value.double() - reference.double()).norm() / reference.double().norm())


def sequential_bf16_mean(features, length):
    """The clip mean as bf16 atomics on a GPU compute it (what the earlier code did under
    CUDA autocast: ``index_add_`` into a bf16 sum, then a bf16 division by a bf16 length): one
    bf16 rounding per added frame. (The CPU's ``index_add_`` sums in float internally, which is
    why the bug never showed on the CPU.)"""
    total = torch.zeros(features.shape[1], dtype=torch.bfloat16)
    for row in features.to(torch.bfloat16):
        total += row
    return total / torch.tensor(float(length)).to(torch.bfloat16)


def test_crepe_clip_mean_under_bf16_autocast_matches_float32_on_a_long_clip():
    torch.manual_seed(0)
    encoder = CrepeEncoder("tiny").eval()
    inputs = encoder.preprocess([synthetic_speechlike(48_000, 3, amplitude=0.1)])
    length = int(inputs["lengths"][0])
    assert length == 301  # 3 s: past the ~256 frames where a bf16 running sum stalls
    with torch.no_grad():
        reference = encoder(**inputs)[0]
        with torch.autocast(**BF16):
            mixed = encoder(**inputs)
            features = encoder.frame_features(inputs["frames"][0])
    assert features.dtype == torch.bfloat16  # the convolutions did run in bf16
    assert mixed.dtype == torch.float32  # the sum and the count did not
    assert relative_error(mixed[0], reference) < BF16_TOLERANCE
    # the earlier bf16 accumulation fails this tolerance by far (about 0.07 here, 0.27 at 5 s)
    assert relative_error(sequential_bf16_mean(features, length), reference) > 4 * BF16_TOLERANCE


def test_crepe_clip_mean_keeps_frame_counts_exact(monkeypatch):
    """1001 frames: bf16 would hold the count as 1000. Frame features of 1 except one 0 have
    the mean 1000/1001 exactly in float32, however the features were computed."""
    encoder = CrepeEncoder("tiny", frames_per_pass=300)

    def ones_but_the_first(windows):
        out = torch.ones(len(windows), encoder.dim, dtype=torch.bfloat16)
        out[windows[:, 0] == -1] = 0  # the marked window
        return out

    monkeypatch.setattr(encoder, "frame_features", ones_but_the_first)
    frames = torch.zeros(2, 1001, 1024)
    frames[0, 0, 0] = -1
    lengths = torch.tensor([1001, 3])
    with torch.autocast(**BF16):
        means = encoder(frames, lengths)
    assert means.dtype == torch.float32
    torch.testing.assert_close(means[0], torch.full((encoder.dim,), 1000 / 1001), rtol=0,
                               atol=1e-7)
    torch.testing.assert_close(means[1], torch.ones(encoder.dim), rtol=0, atol=0)
    assert float(torch.tensor(1001.0).to(torch.bfloat16)) == 1000.0  # what it guards against


def test_crepe_gradients_flow_through_the_float32_sum():
    torch.manual_seed(0)
    encoder = CrepeEncoder("tiny", hop_length=400, frames_per_pass=3).eval()
    freeze_all_but_last(encoder, 1)
    inputs = encoder.preprocess([synthetic_speechlike(4000, 0), synthetic_speechlike(1600, 1)])
    with torch.autocast(**BF16):
        out = encoder(**inputs)
    out.sum().backward()
    gradient = encoder.blocks[4].conv.weight.grad
    assert gradient is not None and gradient.dtype == torch.float32
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def waves(count=3, seed=0):
    return [synthetic_speechlike(n, seed + i) for i, n in enumerate((3000, 9000, 5000)[:count])]


@pytest.mark.parametrize("windows", [False, True])
def test_ge2e_under_autocast_runs_its_lstms_in_float32(windows):
    torch.manual_seed(0)
    encoder = GE2EEncoder(windows=windows).eval()
    inputs = encoder.preprocess([synthetic_speechlike(n, i) for i, n in
                                 enumerate((30_000, 12_000))])
    with torch.no_grad():
        reference = encoder(**inputs)
        with torch.autocast(**BF16):
            mixed = encoder(**inputs)
            # what the earlier code ran: the same layers with autocast in charge
            layer_output, _ = encoder.lstm_layers[0](inputs["mels"])
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=0, atol=1e-6)
    assert layer_output.dtype == torch.bfloat16  # CPU autocast does cast LSTMs


def test_ge2e_under_autocast_differs_from_float32_without_the_guard():
    """The guard is what makes the test above pass: the same computation left to autocast
    (``_embed``, the unguarded one-pass path) is off by far more than float32 rounding."""
    torch.manual_seed(0)
    encoder = GE2EEncoder().eval()
    inputs = encoder.preprocess(waves())
    with torch.no_grad():
        reference = encoder(**inputs)
        with torch.autocast(**BF16):
            unguarded = encoder._embed(inputs["mels"], inputs["lengths"])
    assert (unguarded.float() - reference).abs().max() > 1e-3


def test_ge2e_gradients_under_autocast_equal_float32_gradients():
    torch.manual_seed(0)
    encoder = GE2EEncoder()
    inputs = encoder.preprocess([synthetic_speechlike(n, i) for i, n in enumerate((2000, 3000))])
    gradients = []
    for context in (torch.autocast(**BF16, enabled=False), torch.autocast(**BF16)):
        encoder.zero_grad()
        with context:
            loss = encoder(**inputs).pow(3).sum()
        loss.backward()
        gradients.append([p.grad.clone() for p in encoder.parameters()])
    for plain, mixed in zip(*gradients, strict=True):
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(mixed, plain, rtol=1e-5, atol=1e-7)


def test_split_ge2e_under_autocast_equals_the_float32_encoder():
    torch.manual_seed(0)
    encoder = GE2EEncoder().eval()
    front, top = split_ge2e(encoder, 2)
    inputs = encoder.preprocess(waves())
    with torch.no_grad():
        reference = encoder(**inputs)
        with torch.autocast(**BF16):
            sequences = front(**inputs)
            mixed = top(sequences, inputs["lengths"])
    assert sequences.dtype == mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=0, atol=1e-6)


def test_ge2e_in_float64_stays_in_float64():
    torch.manual_seed(0)
    encoder = GE2EEncoder().double().eval()
    inputs = encoder.preprocess(waves(1))
    with torch.no_grad(), torch.autocast(**BF16):
        out = encoder(**inputs)
    assert out.dtype == torch.float64


def test_pool_mean_counts_frames_in_float32_under_autocast():
    features = torch.ones(1, 1001, 4, dtype=torch.bfloat16)
    features[0, 0] = 0
    mask = torch.ones(1, 1001)
    with torch.autocast(**BF16):
        masked, plain = pool(features, "mean", mask), pool(features, "mean")
    for mean in (masked, plain):
        assert mean.dtype == torch.float32
        torch.testing.assert_close(mean, torch.full((1, 4), 1000 / 1001), rtol=0, atol=1e-7)
    # max pooling keeps the dtype and ignores masked frames
    half = torch.tensor([[1.0, 0.0]])
    values = torch.tensor([[[1.0], [5.0]]])
    assert pool(values, "max", half).tolist() == [[1.0]]


def test_a_linear_head_after_a_guarded_encoder_still_runs_under_autocast():
    """Only the guarded parts leave autocast: a layer after them is autocast's again."""
    torch.manual_seed(0)
    encoder = GE2EEncoder().eval()
    head = nn.Linear(256, 8)
    inputs = encoder.preprocess(waves(1))
    with torch.no_grad(), torch.autocast(**BF16):
        out = head(encoder(**inputs))
    assert out.dtype == torch.bfloat16
    assert np.isfinite(out.float().numpy()).all()
