"""Training-step throughput of tuner: SupCon on 512 x 768 embeddings, and a small transformer.

Two workloads, each timed as whole optimiser steps (forward, loss, backward, clipping, AdamW)
through the same code path that ``tuner.train.fit`` uses (``autocast`` from tuner.embed and the
loss from tuner.losses):

1. ``supcon-512x768``: a batch of 512 rows of 768-D features (what a frozen 768-D encoder
   such as wav2vec2-base or AST hands over) through the projection head (768 -> 768 -> 128)
   into SupCon with 128 classes x 4 samples.
2. ``transformer``: a small transformer encoder (4 layers, d_model 256, 4 heads, FFN 1024) on
   64 clips x 200 frames x 80 mel bands, mean-pooled, then head + SupCon.
3. ``ge2e-top``: GE2E's trainable top (``tuner.encoders.GE2ETop``: one LSTM layer 256 -> 256,
   linear, ReLU, L2 norm) on 64 cached front-end sequences of 115-230 frames (spoken-word
   mixtures), SupCon on the embedding, as the spoken-words example trains it. The same top
   reading its state from a packed sequence (``pack_padded_sequence``, the usual way) is the
   baseline; the ratio is printed.

On CUDA each runs in float32 and with bf16 autocast and the ratio is printed; on the CPU
float32 only. The same SupCon loss written the direct way (exp, masked sums, log, as in the
formula) is timed alongside as the baseline for the loss alone.

Run:  python benchmarks/bench_tuner.py [--device cuda] [--steps 50]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn

from tuner.distributed import select_device
from tuner.embed import autocast
from tuner.encoders import GE2ETop
from tuner.heads import ProjectionHead
from tuner.losses import SupConLoss


class TinyTransformer(nn.Module):
    def __init__(self, n_mels=80, dim=256, layers=4):
        super().__init__()
        self.inp = nn.Linear(n_mels, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers)

    def forward(self, frames):
        return self.encoder(self.inp(frames)).mean(dim=1)


class PackedGE2ETop(GE2ETop):
    """The baseline: the state at each sequence's end read from a packed sequence."""

    def forward(self, frames, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(frames, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        embeddings = self.relu(self.linear(hidden[-1]))
        return embeddings / embeddings.norm(dim=1, keepdim=True).clamp_min(1e-12)


class Sequences(nn.Module):
    """Calls ``top(frames, lengths)`` on a ``(frames, lengths)`` input."""

    def __init__(self, top):
        super().__init__()
        self.top = top

    def forward(self, inputs):
        return self.top(*inputs)


def direct_supcon(features, labels, temperature=0.07):
    """SupCon written straight from the formula (the usual hand-written version)."""
    z = nn.functional.normalize(features.float(), dim=1)
    logits = z @ z.T / temperature
    n = len(labels)
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    positives = (labels[:, None] == labels[None, :]) & not_self
    exp = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp.sum(dim=1, keepdim=True))
    return -((log_prob * positives).sum(1) / positives.sum(1)).mean()


def steps_per_second(model, head, make_batch, loss_fn, device, amp, steps, warmup=5):
    parameters = list(model.parameters()) + list(head.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=1e-4)
    inputs, labels = make_batch()
    for step in range(warmup + steps):
        if step == warmup:
            synchronise(device)
            began = time.perf_counter()
        with autocast(device, amp):
            outputs = head(model(inputs))
        loss = loss_fn(outputs, labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
    synchronise(device)
    return steps / (time.perf_counter() - began)


def loss_seconds(loss_fn, features, labels, repeats=20):
    for _ in range(3):
        loss_fn(features, labels).backward()
    synchronise(features.device)
    began = time.perf_counter()
    for _ in range(repeats):
        loss_fn(features, labels).backward()
    synchronise(features.device)
    return (time.perf_counter() - began) / repeats


def synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    device = select_device(args.device)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {device} ({name}); torch {torch.__version__}; "
          f"{torch.get_num_threads()} CPU threads")
    supcon = SupConLoss(0.07)
    labels512 = torch.arange(512, device=device) % 128
    workloads = {
        "supcon-512x768": (nn.Identity(), ProjectionHead(768, 128),
                           lambda: (torch.randn(512, 768, device=device), labels512)),
        "transformer": (TinyTransformer(), ProjectionHead(256, 128),
                        lambda: (torch.randn(64, 200, 80, device=device),
                                 torch.arange(64, device=device) % 16)),
    }
    lengths = torch.linspace(115, 230, 64).round().long().to(device)

    def ge2e_batch():
        return ((torch.randn(64, 230, 256, device=device), lengths),
                torch.arange(64, device=device) % 16)

    for label, kind in (("ge2e-top", GE2ETop), ("ge2e-top-packed", PackedGE2ETop)):
        torch.manual_seed(1)
        top = kind(nn.LSTM(256, 256, 1, batch_first=True), nn.Linear(256, 256))
        workloads[label] = (Sequences(top), nn.Identity(), ge2e_batch)
    precisions = [False, True] if device.type == "cuda" else [False]
    rates_by_label = {}
    for label, (model, head, make_batch) in workloads.items():
        model.to(device)
        head.to(device)
        rates = {amp: steps_per_second(model, head, make_batch, supcon, device, amp, args.steps)
                 for amp in precisions}
        rates_by_label[label] = rates[False]
        line = f"{label:16s} float32 {rates[False]:8.2f} steps/s"
        if True in rates:
            line += (f"   bf16 autocast {rates[True]:8.1f} steps/s   "
                     f"ratio {rates[True] / rates[False]:.2f}x")
        print(line)
    print(f"ge2e-top: padded + last_states {rates_by_label['ge2e-top']:.2f} steps/s, packed "
          f"{rates_by_label['ge2e-top-packed']:.2f} steps/s, ratio "
          f"{rates_by_label['ge2e-top'] / rates_by_label['ge2e-top-packed']:.1f}x")
    features = torch.randn(512, 128, device=device, requires_grad=True)
    ours, direct = (loss_seconds(fn, features, labels512) for fn in (supcon, direct_supcon))
    print(f"SupCon loss+backward on 512 x 128: tuner {1e3 * ours:.2f} ms, direct formula "
          f"{1e3 * direct:.2f} ms, ratio {direct / ours:.2f}x")
    check = (supcon(features, labels512) - direct_supcon(features, labels512)).abs().item()
    print(f"|tuner - direct| loss difference: {check:.2e}")


if __name__ == "__main__":
    main()
