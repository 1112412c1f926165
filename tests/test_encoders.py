import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from tuner.encoders import PooledEncoder, block_list, freeze_all_but_last, pool  # noqa: E402


def test_pooling_modes_against_manual_computations():
    features = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    torch.testing.assert_close(pool(features, "mean"), features.mean(dim=1))
    torch.testing.assert_close(pool(features, "max"), features.max(dim=1).values)
    torch.testing.assert_close(pool(features, "cls"), features[:, 0])
    expected = torch.stack([features[i, : int(mask[i].sum())].mean(dim=0) for i in range(3)])
    torch.testing.assert_close(pool(features, "mean", mask), expected)
    expected = torch.stack([features[i, : int(mask[i].sum())].max(dim=0).values
                            for i in range(3)])
    torch.testing.assert_close(pool(features, "max", mask), expected)
    flat = torch.randn(3, 4)
    assert pool(flat, "mean") is flat
    with pytest.raises(ValueError, match="pooling"):
        pool(features, "attention")


class HuggingFaceLike(nn.Module):
    """Returns an object with last_hidden_state, as transformers models do."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 6)

    def forward(self, x):
        return type("Output", (), {"last_hidden_state": self.proj(x)})()


def test_pooled_encoder_accepts_tensors_tuples_and_model_outputs():
    x = torch.randn(2, 7, 4)
    encoder = PooledEncoder(HuggingFaceLike(), pooling="mean")
    assert encoder(x).shape == (2, 6)
    as_tuple = PooledEncoder(nn.Sequential(nn.Linear(4, 6)), pooling="cls")
    assert as_tuple(x).shape == (2, 6)


def test_freeze_all_but_the_last_blocks():
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16,
                                       batch_first=True)
    model = nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoder(layer, num_layers=4,
                                                                 enable_nested_tensor=False))
    blocks = block_list(model)
    assert len(blocks) == 4
    trainable = freeze_all_but_last(model, 2)
    assert trainable == sum(p.numel() for block in list(blocks)[2:] for p in block.parameters())
    assert not any(p.requires_grad for p in model[0].parameters())
    assert not any(p.requires_grad for p in blocks[1].parameters())
    assert all(p.requires_grad for p in blocks[3].parameters())
    assert freeze_all_but_last(model, 0) == 0
    with pytest.raises(ValueError, match="n_blocks"):
        freeze_all_but_last(model, 5)
