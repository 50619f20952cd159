import math

import pytest
import torch
import torch.nn.functional as F

from llmlab import attention
from llmlab.attention import (MASK, causal_mask, causal_lm_pairs, check_prefix_lm_mask, decoder_mask,
                              encoder_decoder_masks, encoder_mask, masked_lm, parameter_count,
                              scaled_dot_product_attention, sinusoidal_positions, span_corruption)
from llmlab.gpt import GPT, GPTConfig

SENTENCE = "the model never sees the letters of the word strawberry , only its tokens".split()


@pytest.mark.parametrize("shape", [(4, 8), (2, 3, 4, 8), (1, 2, 7, 16)])
def test_attention_by_hand_equals_torch(shape):
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape) for _ in range(3))
    ours, weights = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(shape[:-1]))


@pytest.mark.parametrize("shape", [(4, 8), (2, 3, 4, 8), (1, 2, 7, 16)])
def test_causal_attention_by_hand_equals_torch(shape):
    torch.manual_seed(1)
    q, k, v = (torch.randn(shape) for _ in range(3))
    T = shape[-2]
    ours, weights = scaled_dot_product_attention(q, k, v, causal_mask(T))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6, rtol=1e-5)
    assert torch.all(weights.triu(diagonal=1) == 0)  # nothing from the future
    torch.testing.assert_close(ours[..., 0, :], v[..., 0, :])  # the first token can only see itself


def test_any_boolean_mask_matches_torch():
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    mask = torch.rand(5, 6) > 0.4
    mask[:, 0] = True  # every query keeps at least one key
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=1e-5)


def test_causal_mask_after_a_cached_prefix():
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    # two new tokens after three cached ones: both see the prefix, the first not the second
    assert torch.equal(causal_mask(2, 3), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))


def test_masks_of_the_three_families():
    assert encoder_mask(4).all()
    assert torch.equal(decoder_mask(4), causal_mask(4))
    masks = encoder_decoder_masks(5, 3)
    assert masks["encoder self-attention"].shape == (5, 5) and masks["encoder self-attention"].all()
    assert torch.equal(masks["decoder self-attention"], causal_mask(3))
    assert masks["cross-attention"].shape == (3, 5) and masks["cross-attention"].all()


def test_sinusoidal_positions_known_values():
    table = sinusoidal_positions(50, 16)
    assert table.shape == (50, 16)
    assert torch.equal(table[0], torch.tensor([0.0, 1.0] * 8))  # sin 0, cos 0
    for pos, i in [(1, 0), (7, 3), (49, 7)]:
        angle = pos / 10000 ** (2 * i / 16)
        assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_a_shift_is_the_same_rotation_at_every_position():
    table = sinusoidal_positions(64, 8).double()
    shift = 5
    frequency = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    cos, sin = torch.cos(shift * frequency), torch.sin(shift * frequency)
    rotated = torch.empty_like(table[:-shift])
    rotated[:, 0::2] = table[:-shift, 0::2] * cos + table[:-shift, 1::2] * sin  # sin(a + b)
    rotated[:, 1::2] = table[:-shift, 1::2] * cos - table[:-shift, 0::2] * sin  # cos(a + b)
    torch.testing.assert_close(rotated, table[shift:], atol=1e-5, rtol=0)


def test_sinusoidal_positions_need_an_even_dimension():
    with pytest.raises(ValueError, match="must be even"):
        sinusoidal_positions(10, 7)


@pytest.mark.parametrize("config", [
    GPTConfig(vocab_size=100, block_size=16, n_layer=1, n_head=2, n_embd=8),
    GPTConfig(vocab_size=4096, block_size=256, n_layer=4, n_head=4, n_embd=128),
    GPTConfig(vocab_size=300, block_size=32, n_layer=3, n_head=3, n_embd=48, bias=False),
])
def test_parameter_formula_equals_the_model(config):
    assert parameter_count(config)["total"] == GPT(config).num_parameters()


def test_gpt2_small_has_124m_parameters():
    config = GPTConfig()  # the defaults are GPT-2 small
    with torch.device("meta"):  # shapes only: no memory, no time
        model = GPT(config)
    assert parameter_count(config)["total"] == model.num_parameters() == 124_439_808


def test_prefix_lm_checker(capsys):
    check_prefix_lm_mask(attention._prefix_lm_reference)
    assert "✓" in capsys.readouterr().out
    check_prefix_lm_mask(lambda n, prefix: causal_mask(n))  # a decoder is wrong as soon as prefix > 1
    out = capsys.readouterr().out
    assert "✗" in out and "Hint" in out
    check_prefix_lm_mask(lambda n, prefix: causal_mask(n).int())
    assert "booleans" in capsys.readouterr().out

    def placeholder(n, prefix):
        raise NotImplementedError

    check_prefix_lm_mask(placeholder)
    assert "Not done yet" in capsys.readouterr().out


def test_prefix_lm_reference_is_a_decoder_and_an_encoder_at_the_ends():
    assert torch.equal(attention._prefix_lm_reference(5, 0), decoder_mask(5))
    assert torch.equal(attention._prefix_lm_reference(5, 1), decoder_mask(5))
    assert torch.equal(attention._prefix_lm_reference(5, 5), encoder_mask(5))


def test_causal_lm_pairs():
    pairs = causal_lm_pairs(SENTENCE)
    assert len(pairs) == len(SENTENCE) - 1
    assert pairs[0] == (["the"], "model")
    assert all(context + [target] == SENTENCE[:len(context) + 1] for context, target in pairs)


def test_masked_lm_hides_about_15_percent_and_keeps_the_answers():
    tokens = SENTENCE * 20
    inputs, targets = masked_lm(tokens, vocabulary=SENTENCE, seed=3)
    assert len(inputs) == len(targets) == len(tokens)
    predicted = [i for i, t in enumerate(targets) if t is not None]
    assert len(predicted) == round(0.15 * len(tokens))
    assert all(targets[i] == tokens[i] for i in predicted)
    assert all(inputs[i] == tokens[i] for i in range(len(tokens)) if targets[i] is None)
    masked = sum(inputs[i] == MASK for i in predicted) / len(predicted)
    assert 0.6 < masked < 0.95  # 80 % of the predicted tokens are [MASK]
    assert masked_lm(tokens, SENTENCE, seed=3) == (inputs, targets)


@pytest.mark.parametrize("seed", range(5))
def test_span_corruption_round_trip(seed):
    inputs, targets = span_corruption(SENTENCE, noise_density=0.3, mean_span=2, seed=seed)
    sentinels = [t for t in inputs if t.startswith("<extra_id_")]
    assert sentinels == [f"<extra_id_{i}>" for i in range(len(sentinels))]
    assert targets[-1] == f"<extra_id_{len(sentinels)}>"  # T5 closes the target with one more sentinel
    # put each hidden span back where its sentinel stands: the sentence comes back
    spans, current = {}, None
    for token in targets[:-1]:
        if token.startswith("<extra_id_"):
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    rebuilt = [t for token in inputs for t in (spans[token] if token in spans else [token])]
    assert rebuilt == SENTENCE
    assert sum(len(s) for s in spans.values()) == round(0.3 * len(SENTENCE))


def test_span_corruption_needs_two_tokens():
    with pytest.raises(ValueError, match="at least two"):
        span_corruption(["strawberry"])
