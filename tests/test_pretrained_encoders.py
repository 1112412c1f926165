import importlib.util
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import import_resemblyzer, synthetic_speechlike  # noqa: E402
from tuner import encoders  # noqa: E402
from tuner.encoders import (  # noqa: E402
    GE2EEncoder,
    HFAudioEncoder,
    block_list,
    freeze_all_but_last,
)


@pytest.fixture(scope="module")
def ge2e():
    if importlib.util.find_spec("resemblyzer") is None:
        pytest.skip("resemblyzer is not installed")
    return GE2EEncoder.pretrained()


# --- GE2E -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ge2e_pretrained_equals_resemblyzer_voice_encoder(ge2e):
    resemblyzer = import_resemblyzer()
    reference = resemblyzer.VoiceEncoder("cpu", verbose=False)
    for n_samples, seed in [(16000, 0), (25600, 1)]:
        wav = synthetic_speechlike(n_samples, seed)
        mels = resemblyzer.audio.wav_to_mel_spectrogram(
            resemblyzer.normalize_volume(wav, -30, increase_only=True))
        with torch.no_grad():
            expected = reference.forward(torch.from_numpy(mels)[None])
            ours = ge2e(**ge2e.preprocess([wav]))
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_ge2e_padded_batches_equal_one_at_a_time_and_are_unit_norm(ge2e):
    waveforms = [synthetic_speechlike(16000, 0), synthetic_speechlike(25600, 1),
                 synthetic_speechlike(7000, 2)]
    inputs = ge2e.preprocess(waveforms)
    assert inputs["mels"].shape == (3, 161, 40) and inputs["mels"].dtype == torch.float32
    assert inputs["lengths"].tolist() == [101, 161, 44]
    assert inputs["lengths"].dtype == torch.int64
    assert torch.all(inputs["mels"][2, 44:] == 0)
    with torch.no_grad():
        batched = ge2e(**inputs)
        alone = torch.cat([ge2e(**ge2e.preprocess([wav])) for wav in waveforms])
    assert batched.shape == (3, ge2e.dim) == (3, 256)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(3))
    assert torch.all(batched >= 0)  # ReLU before the normalisation


def test_ge2e_padding_without_weights_and_tiny_waveforms():
    torch.manual_seed(0)
    encoder = GE2EEncoder().eval()
    assert (encoder.sample_rate, encoder.dim) == (16000, 256)
    waveforms = [np.zeros(0, dtype=np.float32), synthetic_speechlike(50, 0),
                 synthetic_speechlike(4000, 1)]
    inputs = encoder.preprocess(waveforms)
    assert inputs["lengths"].tolist() == [1, 1, 26]
    with torch.no_grad():
        batched = encoder(**inputs)
        alone = torch.cat([encoder(**encoder.preprocess([wav])) for wav in waveforms])
        unpacked = encoder(inputs["mels"][2:])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(unpacked, batched[2:], atol=1e-5, rtol=0)
    assert torch.isfinite(batched).all()
    with pytest.raises(ValueError, match="1-D"):
        encoder.preprocess([np.zeros((2, 100), dtype=np.float32)])


def test_ge2e_checkpoint_errors(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    no_state = tmp_path / "no_state.pt"
    torch.save({"weights": torch.zeros(3)}, no_state)
    wrong_shapes = tmp_path / "wrong.pt"
    torch.save({"model_state": {"linear.weight": torch.zeros(2, 2)}}, wrong_shapes)
    for path, message in [(garbage, "not a GE2E checkpoint"), (no_state, "model_state"),
                          (wrong_shapes, "does not fit")]:
        with pytest.raises(ValueError, match=message) as caught:
            GE2EEncoder.pretrained(path)
        assert "\n" not in str(caught.value)
    with pytest.raises(FileNotFoundError):
        GE2EEncoder.pretrained(tmp_path / "absent.pt")
    monkeypatch.setattr(encoders.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install resemblyzer.*--no-deps"):
        GE2EEncoder.pretrained()


# --- Hugging Face audio models ----------------------------------------------------------------

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64}
SMALL_CONVS = {"conv_dim": (32, 32, 32), "conv_stride": (5, 4, 4), "conv_kernel": (10, 8, 4),
               "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2}


def tiny_model_and_extractor(kind):
    """A randomly initialised tiny model of ``kind`` and its feature extractor (16 kHz)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "wav2vec2":
        config = transformers.Wav2Vec2Config(**SMALL, **SMALL_CONVS, feat_extract_norm="layer",
                                             do_stable_layer_norm=True)
        extractor = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    elif kind == "hubert":
        config = transformers.HubertConfig(**SMALL, **SMALL_CONVS)
        extractor = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=False)
    elif kind == "ast":
        config = transformers.ASTConfig(**SMALL, patch_size=16, frequency_stride=10,
                                        time_stride=10, max_length=64, num_mel_bins=32)
        extractor = transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=64)
    else:
        config = transformers.WhisperConfig(
            d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
            max_source_positions=50, max_target_positions=16, vocab_size=64, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, suppress_tokens=None,
            begin_suppress_tokens=None)
        extractor = transformers.WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    return transformers.AutoModel.from_config(config).eval(), extractor


KINDS = ["wav2vec2", "hubert", "ast", "whisper"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_hf_encoder_embeds_a_padded_batch_and_reloads_from_a_directory(kind, tmp_path):
    model, extractor = tiny_model_and_extractor(kind)
    encoder = HFAudioEncoder(model, extractor, pooling="mean")
    assert (encoder.sample_rate, encoder.dim) == (16000, 32)
    waveforms = [synthetic_speechlike(8000, 0), synthetic_speechlike(12800, 1)]
    inputs = encoder.preprocess(waveforms)
    assert all(isinstance(value, torch.Tensor) for value in inputs.values())
    with torch.no_grad():
        embeddings = encoder(**inputs)
    assert embeddings.shape == (2, 32) and torch.isfinite(embeddings).all()
    assert not torch.allclose(embeddings[0], embeddings[1])

    model.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    reloaded = HFAudioEncoder.from_pretrained(tmp_path, pooling="mean")
    assert not reloaded.training
    with torch.no_grad():
        again = reloaded(**reloaded.preprocess(waveforms))
    torch.testing.assert_close(again, embeddings, atol=1e-6, rtol=0)

    layer_class = {"wav2vec2": "Wav2Vec2EncoderLayerStableLayerNorm",
                   "hubert": "HubertEncoderLayer", "ast": "ASTLayer",
                   "whisper": "WhisperEncoderLayer"}[kind]
    blocks = block_list(encoder)  # not wav2vec2's three conv_layers
    assert len(blocks) == 2 and all(type(block).__name__ == layer_class for block in blocks)
    trainable = freeze_all_but_last(encoder, 1)
    assert trainable == sum(p.numel() for p in blocks[1].parameters()) > 0
    assert not any(p.requires_grad for p in blocks[0].parameters())


@pytest.mark.slow
def test_hf_encoder_masks_padding_out_of_the_pooled_embedding():
    model, extractor = tiny_model_and_extractor("wav2vec2")
    waveforms = [synthetic_speechlike(8000, 0), synthetic_speechlike(12800, 1)]
    for pooling in ("mean", "max"):
        encoder = HFAudioEncoder(model, extractor, pooling=pooling)
        with torch.no_grad():
            batched = encoder(**encoder.preprocess(waveforms))
            alone = encoder(**encoder.preprocess(waveforms[:1]))
        torch.testing.assert_close(batched[0], alone[0], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_hf_whisper_pools_only_the_frames_of_the_waveform():
    model, extractor = tiny_model_and_extractor("whisper")
    encoder = HFAudioEncoder(model, extractor, pooling="mean")
    inputs = encoder.preprocess([synthetic_speechlike(8000, 0)])
    assert inputs["input_features"].shape == (1, 16, 100)  # padded to chunk_length = 1 s
    with torch.no_grad():
        hidden = encoder.model(input_features=inputs["input_features"]).last_hidden_state
        embedding = encoder(**inputs)
    assert hidden.shape[1] == 50
    torch.testing.assert_close(embedding[0], hidden[0, :25].mean(dim=0))


@pytest.mark.slow
def test_hf_encoder_errors(tmp_path):
    model, extractor = tiny_model_and_extractor("ast")
    with pytest.raises(ValueError, match="pooling"):
        HFAudioEncoder(model, extractor, pooling="attention")
    with pytest.raises(FileNotFoundError, match="no model directory"):
        HFAudioEncoder.from_pretrained(tmp_path / "absent")


@pytest.mark.slow
def test_hf_encoder_from_config():
    transformers = pytest.importorskip("transformers")
    config = transformers.ASTConfig(**SMALL, patch_size=16, frequency_stride=10, time_stride=10,
                                    max_length=64, num_mel_bins=32)
    extractor = transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=64)
    encoder = HFAudioEncoder.from_config(config, extractor, pooling="cls")
    with torch.no_grad():
        embeddings = encoder(**encoder.preprocess([synthetic_speechlike(4000, 0)]))
    assert embeddings.shape == (1, 32)


def test_importing_tuner_encoders_does_not_import_optional_audio_packages():
    code = ("import sys, tuner.encoders, tuner.audio; "
            "print(sorted(m for m in ('transformers', 'librosa', 'resemblyzer', 'soundfile') "
            "if m in sys.modules))")
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_hf_encoder_turns_layerdrop_off_for_ddp():
    """LayerDrop would skip different layers on different ranks (DDP then waits for gradients
    that never come); the wrapper keeps every layer."""
    model, extractor = tiny_model_and_extractor("wav2vec2")
    model.config.layerdrop = 0.1
    encoder = HFAudioEncoder(model, extractor)
    assert encoder.model.config.layerdrop == 0.0


@pytest.mark.slow
def test_hf_encoder_rejects_clips_shorter_than_its_receptive_field():
    model, extractor = tiny_model_and_extractor("wav2vec2")
    encoder = HFAudioEncoder(model, extractor)
    with pytest.raises(ValueError, match="too short .* at least 105 samples"):
        encoder.preprocess([np.zeros(5, np.float32), np.zeros(800, np.float32)])
    assert encoder(**encoder.preprocess([np.zeros(105, np.float32)])).shape == (1, 32)
