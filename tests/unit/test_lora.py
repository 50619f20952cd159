"""LoRA from scratch: starts as a no-op, trains only the adapters, merges exactly, and equals peft's."""

import pytest
import torch

from llmlab import lora
from llmlab.checks import CourseError
from llmlab.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def _randomize_adapters(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))


def test_a_fresh_adapter_changes_nothing_and_only_adapters_train():
    model = _model()
    before = model(IDS)[0]
    lora.add_lora(model, lora.LoRAConfig(rank=4, alpha=8))
    torch.testing.assert_close(model(IDS)[0], before)  # B = 0 at the start
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    n_adapted = CONFIG.n_layer * 4  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
    assert sum(1 for m in model.modules() if isinstance(m, lora.LoRALinear)) == n_adapted
    d = CONFIG.n_embd
    per_layer = 4 * (d + 3 * d) + 4 * (d + d) + 4 * (d + 4 * d) + 4 * (4 * d + d)
    assert lora.trainable_parameters(model)[0] == CONFIG.n_layer * per_layer
    assert 0 < lora.trainable_share(model) < 1


def test_merging_gives_the_same_logits():
    model = lora.add_lora(_model(), lora.LoRAConfig(rank=4, alpha=8))
    _randomize_adapters(model)
    adapted = model(IDS)[0]
    assert not torch.allclose(adapted, _model()(IDS)[0], atol=1e-3)  # the adapter does something
    lora.merge_lora(model)
    assert not any(isinstance(m, lora.LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(IDS)[0], adapted, atol=1e-5, rtol=1e-5)
    assert isinstance(model.transformer.h[0].attn.c_attn, torch.nn.Linear)


@pytest.mark.parametrize("targets", [("c_attn", "c_proj", "c_fc"), ("c_attn",), ("c_fc", "c_proj")])
def test_lora_equals_peft_for_the_same_adapter_weights(targets):
    config = lora.LoRAConfig(rank=4, alpha=8, targets=targets)
    model = lora.add_lora(_model(), config)
    _randomize_adapters(model)
    theirs = lora.to_peft(model, config)
    trainable_theirs, total_theirs = theirs.get_nb_trainable_parameters()
    assert trainable_theirs == lora.trainable_parameters(model)[0]
    with torch.no_grad():
        torch.testing.assert_close(theirs(IDS).logits, model(IDS)[0], atol=1e-5, rtol=1e-5)
        merged_theirs = theirs.merge_and_unload()
        torch.testing.assert_close(merged_theirs(IDS).logits, lora.merge_lora(model)(IDS)[0], atol=1e-5, rtol=1e-5)


def test_bad_lora_settings_get_a_course_error():
    for bad in [dict(rank=0), dict(rank=2.5), dict(alpha=0), dict(alpha=float("nan")), dict(targets=("q_proj",)),
                dict(targets=())]:
        with pytest.raises(CourseError):
            lora.LoRAConfig(**bad)
    model = lora.add_lora(_model())
    with pytest.raises(CourseError, match="already"):
        lora.add_lora(model)
    with pytest.raises(CourseError, match="no LoRA"):
        lora.merge_lora(_model())
    with pytest.raises(CourseError):
        lora.LoRALinear(torch.nn.Linear(4, 4), rank=8, alpha=1)
