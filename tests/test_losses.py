"""tuner.losses against slow loop references written from the formulas, and gradcheck."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tuner.losses import JaccardSupConLoss, NTXentLoss, SupConLoss  # noqa: E402


def reference(features, weights, temperature):
    """The loss from its definition, one anchor and one pair at a time, in float64."""
    z = [np.asarray(row, dtype=np.float64) / np.linalg.norm(row) for row in features]
    n = len(z)
    losses = []
    for i in range(n):
        total = sum(weights[i][j] for j in range(n) if j != i)
        if total == 0:
            continue
        denominator = sum(math.exp(z[i] @ z[a] / temperature) for a in range(n) if a != i)
        value = 0.0
        for j in range(n):
            if j != i and weights[i][j] > 0:
                log_p = z[i] @ z[j] / temperature - math.log(denominator)
                value -= weights[i][j] * log_p
        losses.append(value / total)
    return float(np.mean(losses)) if losses else 0.0


def flat_views(features):
    """(B, V, D) -> list of rows view-major, as the losses flatten them."""
    return [features[b, v] for v in range(features.shape[1]) for b in range(features.shape[0])]


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_supcon_single_view_equals_the_reference(temperature):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 5))
    labels = rng.integers(0, 3, 12)
    weights = (labels[:, None] == labels[None, :]).astype(float)
    ours = SupConLoss(temperature)(torch.tensor(features), torch.tensor(labels))
    assert ours.item() == pytest.approx(reference(features, weights, temperature), rel=1e-9)


def test_supcon_multi_view_equals_the_reference():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(6, 3, 4))
    labels = np.array([0, 1, 0, 2, 1, 2])
    rows = flat_views(features)
    expanded = np.tile(labels, 3)
    weights = (expanded[:, None] == expanded[None, :]).astype(float)
    ours = SupConLoss(0.1)(torch.tensor(features), torch.tensor(labels))
    assert ours.item() == pytest.approx(reference(rows, weights, 0.1), rel=1e-9)


def test_jaccard_equals_the_reference_and_supcon_on_one_hot():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(10, 6))
    tags = (rng.random((10, 4)) < 0.4).astype(np.float32)
    tags[3] = 0  # a sample without tags: no positives, only a negative to the others
    exact = tags.astype(np.float64)
    inter = exact @ exact.T
    union = exact.sum(1)[:, None] + exact.sum(1)[None, :] - inter
    weights = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    ours = JaccardSupConLoss(0.2)(torch.tensor(features), torch.tensor(tags))
    assert ours.item() == pytest.approx(reference(features, weights, 0.2), rel=1e-9)
    labels = rng.integers(0, 4, 10)
    one_hot = np.eye(4, dtype=np.int64)[labels]
    x = torch.tensor(features)
    assert JaccardSupConLoss(0.07)(x, torch.tensor(one_hot)).item() == \
        SupConLoss(0.07)(x, torch.tensor(labels)).item()


def test_ntxent_equals_the_reference():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(5, 2, 4))
    rows = flat_views(features)
    sample = np.tile(np.arange(5), 2)
    weights = (sample[:, None] == sample[None, :]).astype(float)
    ours = NTXentLoss(0.5)(torch.tensor(features))
    assert ours.item() == pytest.approx(reference(rows, weights, 0.5), rel=1e-9)


def test_gradients_by_gradcheck():
    torch.manual_seed(0)
    features = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    tags = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 1]])
    assert torch.autograd.gradcheck(lambda f: SupConLoss(0.3)(f, labels), (features,))
    assert torch.autograd.gradcheck(lambda f: JaccardSupConLoss(0.3)(f, tags), (features,))
    assert torch.autograd.gradcheck(lambda f: NTXentLoss(0.3)(f), (features,))


def test_stability_and_edge_cases():
    features = torch.randn(8, 16) * 1e4  # large norms: normalised inside
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])  # classes 3 and 4 have no positive
    loss = SupConLoss(0.01)(features, labels)
    assert torch.isfinite(loss)
    twice = SupConLoss(0.01)(torch.nn.functional.normalize(features, dim=1), labels)
    assert loss.item() == pytest.approx(twice.item(), rel=1e-5)
    alone = SupConLoss()(torch.randn(4, 3, requires_grad=True), torch.arange(4))
    assert alone.item() == 0.0
    alone.backward()  # no NaN, a usable graph
    with pytest.raises(ValueError, match="labels"):
        SupConLoss()(torch.randn(4, 3), torch.arange(5))
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(0.0)


def test_float32_logits_under_bfloat16_autocast():
    features = torch.randn(16, 8)
    labels = torch.randint(0, 4, (16,))
    plain = SupConLoss()(features, labels)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = SupConLoss()(features.to(torch.bfloat16), labels)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(plain.item(), rel=0.05)
