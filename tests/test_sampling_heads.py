import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tuner.heads import ProjectionHead  # noqa: E402
from tuner.sampling import MPerClassSampler  # noqa: E402


def test_every_batch_has_m_samples_of_distinct_classes():
    labels = np.repeat(np.arange(10), [50, 40, 30, 20, 10, 8, 6, 4, 3, 2])
    sampler = MPerClassSampler(labels, m=4, batch_size=32, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(labels) // 32
    for batch in batches:
        assert len(batch) == 32
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 8 and (counts == 4).all()


def test_no_repeats_inside_large_classes_and_seeded_epochs():
    labels = np.repeat(np.arange(4), 100)
    sampler = MPerClassSampler(labels, m=5, batch_size=20, seed=3)
    for batch in sampler:
        assert len(set(batch)) == 20
    first = list(sampler)
    assert first == list(sampler)  # same epoch, same batches
    sampler.set_epoch(1)
    assert first != list(sampler)


def test_bad_configurations():
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(ValueError, match="at least 2"):
        MPerClassSampler(labels, m=1)
    with pytest.raises(ValueError, match="multiple"):
        MPerClassSampler(labels, m=4, batch_size=10)
    with pytest.raises(ValueError, match="classes"):
        MPerClassSampler(labels, m=2, batch_size=8)


def test_projection_head_is_normalised_and_trainable():
    head = ProjectionHead(16, out_dim=8)
    x = torch.randn(5, 16)
    out = head(x)
    assert out.shape == (5, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
