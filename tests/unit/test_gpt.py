import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from llmlab.attention import parameter_count
from llmlab.gpt import (GPT, GPTConfig, KVCache, attention_maps, from_transformers, local_gpt2,
                        to_transformers)

CONFIGS = [
    GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=16),
    GPTConfig(vocab_size=301, block_size=64, n_layer=3, n_head=4, n_embd=48),
]


def small_gpt(config=CONFIGS[0], seed=0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():  # larger than GPT-2's init, so that differences would show in the logits
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def tokens(config, batch=2, length=None, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch, length or config.block_size), generator=generator)


def test_forward_shapes_and_loss():
    config = CONFIGS[0]
    model = small_gpt(config)
    idx, targets = tokens(config), tokens(config, seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (2, config.block_size, config.vocab_size)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    assert model(idx)[1] is None


def test_loss_at_initialisation_is_near_uniform():
    config = CONFIGS[1]
    torch.manual_seed(0)
    _, loss = GPT(config)(tokens(config), tokens(config, seed=3))
    assert loss.item() == pytest.approx(math.log(config.vocab_size), rel=0.02)  # ln(vocab): no idea yet


def test_ignored_targets_do_not_count():
    config = CONFIGS[0]
    model = small_gpt(config)
    idx, targets = tokens(config), tokens(config, seed=2)
    masked = targets.clone()
    masked[:, :10] = -100
    logits, loss = model(idx, masked)
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, 10:].flatten(0, 1), targets[:, 10:].flatten()))


def test_weight_tying():
    model = GPT(CONFIGS[0])
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_parameters() == sum(p.numel() for p in set(model.parameters()))


@pytest.mark.parametrize("config", CONFIGS)
def test_to_transformers_gives_the_same_logits(config):
    model = small_gpt(config)
    hf = to_transformers(model)
    assert isinstance(hf, GPT2LMHeadModel)
    idx = tokens(config)
    with torch.no_grad():
        ours, hf_logits = model(idx)[0], hf(idx).logits
    torch.testing.assert_close(hf_logits, ours, atol=1e-5, rtol=0)
    assert hf.num_parameters() == model.num_parameters() == parameter_count(config)["total"]


@pytest.mark.parametrize("config", CONFIGS)
def test_from_transformers_gives_the_same_logits(config):
    torch.manual_seed(5)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                    n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                                    initializer_range=0.1)).eval()
    with torch.no_grad():  # biases and norms start at 0 and 1; move them so the mapping of each one is tested
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model = from_transformers(hf)
    assert model.config == config
    idx = tokens(config)
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)


def test_round_trip_keeps_every_weight():
    model = small_gpt(CONFIGS[1])
    back = from_transformers(to_transformers(model))
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def test_only_a_gpt_with_biases_converts():
    with pytest.raises(ValueError, match="biases"):
        to_transformers(GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False)))


def test_kv_cache_one_token_at_a_time_equals_no_cache():
    config = CONFIGS[1]
    model = small_gpt(config)
    idx = tokens(config, batch=2, length=20)
    with torch.no_grad():
        full = model(idx)[0]
        cache = KVCache()
        steps = [model(idx[:, t:t + 1], cache=cache)[0] for t in range(idx.shape[1])]
    assert len(cache) == 20
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_kv_cache_chunk_after_a_cached_prefix_equals_no_cache():
    config = CONFIGS[1]
    model = small_gpt(config)
    idx = tokens(config, batch=2, length=24)
    with torch.no_grad():
        full = model(idx)[0]
        cache = KVCache()
        prefix = model(idx[:, :9], cache=cache)[0]
        chunk = model(idx[:, 9:16], cache=cache)[0]  # seven new tokens at once, after nine cached ones
        rest = model(idx[:, 16:], cache=cache)[0]
    torch.testing.assert_close(torch.cat([prefix, chunk, rest], dim=1), full, atol=1e-5, rtol=0)


def test_beyond_the_context_window_is_a_clear_error():
    config = CONFIGS[0]
    model = small_gpt(config)
    with pytest.raises(ValueError, match="33 tokens do not fit the context window of 32"):
        model(tokens(config, length=33))
    cache = KVCache()
    model(tokens(config, length=30), cache=cache)
    with pytest.raises(ValueError, match="33 tokens do not fit the context window of 32"):
        model(tokens(config, length=3), cache=cache)


def test_token_ids_outside_the_vocabulary_are_a_clear_error():
    config = CONFIGS[0]
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 97\)"):
        small_gpt(config)(torch.tensor([[1, 2, 97]]))


def test_attention_maps_are_the_weights_the_model_uses():
    config = CONFIGS[1]
    model = small_gpt(config)
    idx = tokens(config, batch=1, length=12)
    maps = attention_maps(model, idx[0])
    assert maps.shape == (config.n_layer, config.n_head, 12, 12)
    torch.testing.assert_close(maps.sum(-1), torch.ones(config.n_layer, config.n_head, 12))
    assert torch.all(maps.triu(diagonal=1) == 0)
    # the weights times the values, merged and projected, are what the first attention layer outputs
    block = model.transformer.h[0]
    with torch.no_grad():
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(12))
        h = block.ln_1(x)
        v = block.attn.c_attn(h).split(config.n_embd, dim=2)[2]
        v = v.view(1, 12, config.n_head, -1).transpose(1, 2)
        merged = (maps[0][None] @ v).transpose(1, 2).reshape(1, 12, config.n_embd)
        torch.testing.assert_close(block.attn.c_proj(merged), block.attn(h), atol=1e-5, rtol=0)


def test_local_gpt2_loads_a_saved_model(tmp_path, capsys):
    model = small_gpt(CONFIGS[0])
    to_transformers(model).save_pretrained(tmp_path / "gpt2-like")
    hf, tokenizer = local_gpt2(str(tmp_path / "gpt2-like"))
    assert tokenizer is None  # only weights were saved
    idx = tokens(CONFIGS[0])
    with torch.no_grad():
        torch.testing.assert_close(from_transformers(hf)(idx)[0], model(idx)[0], atol=1e-5, rtol=0)
    assert local_gpt2(str(tmp_path / "nothing here")) == (None, None)
    assert "no GPT-2 model at" in capsys.readouterr().out


def test_real_gpt2_when_present_else_how_to_get_it(capsys):
    hf, _ = local_gpt2("gpt2")
    if hf is None:  # not downloaded on this machine: the one line that says how
        assert "GPT-2 is not on this machine" in capsys.readouterr().out
        return
    model = from_transformers(hf)
    assert model.num_parameters() == parameter_count(model.config)["total"] == 124_439_808
    idx = torch.tensor([[464, 3290, 286, 262, 1573, 705, 41449, 318]])
    hf, model = hf.double(), model.double()  # GPT-2's logits are ~100: float32 rounding alone is ~1e-5
    back = to_transformers(model).double()
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(back(idx).logits, hf(idx).logits, atol=1e-5, rtol=0)
