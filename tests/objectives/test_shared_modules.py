"""The encoder-decoder shares its pieces: one ``CrossAttention`` (the captioner's gated
cross-attention and Perceiver resampler use the encoder-decoder's, unmasked) and GPT-2's
init (``models.lm.init_gpt2_``, the function behind ``LanguageModel.init_weights``)."""

import numpy as np

import tinyllm
import tinyllm.models.captioner as captioner
import tinyllm.models.encoder_decoder as encoder_decoder
from tinyllm.models.encoder_decoder import EncoderDecoder, EncoderDecoderConfig


def test_one_cross_attention_class():
    assert captioner.CrossAttention is encoder_decoder.CrossAttention
    tinyllm.manual_seed(0)
    m = captioner.Captioner(20, projector="perceiver", dim=16, depth=1, heads=2, max_len=8)
    kinds = {type(mod) for _, mod in m.named_modules() if "CrossAttention" in type(mod).__name__}
    assert kinds == {captioner.GatedCrossAttention, encoder_decoder.CrossAttention}


def test_encoder_decoder_init_is_gpt2s_over_both_stacks():
    """Weights N(0, 0.02); o_proj/down_proj at 0.02 / sqrt(2 (L_enc + L_dec)) = 0.005 for
    2 + 2 layers; measured over >= 12k weights per kind, the sample std is within 5 % of
    its target (the standard error of a std estimate is ~1/sqrt(2n) < 1 %)."""
    tinyllm.manual_seed(0)
    config = EncoderDecoderConfig(vocab_size=64, d_model=64, n_layer=2, n_head=4)
    model = EncoderDecoder(config)
    residual, other = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2:
            continue
        kind = name.rsplit(".", 2)[-2]
        (residual if kind in ("o_proj", "down_proj") else other).append(p.detach().numpy().ravel())
    residual, other = np.concatenate(residual), np.concatenate(other)
    assert residual.size > 12_000 and other.size > 12_000
    assert abs(residual.std() / (0.02 / np.sqrt(8)) - 1) < 0.05, residual.std()
    assert abs(other.std() / 0.02 - 1) < 0.05, other.std()
