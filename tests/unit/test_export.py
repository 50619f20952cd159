import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from llmlab import corpora
from llmlab.export import (export_gguf, export_transformers, gguf_metadata, gguf_tensor_name,
                           greedy_tokens_llama_cpp, greedy_tokens_transformers, llama_cpp_logits, load_gguf)
from llmlab.generation import generate
from llmlab.gpt import GPT, GPTConfig
from llmlab.tokenizer import as_transformers, train_bytelevel_bpe

PROMPT = "ROMEO:\nBut soft, what light"


@pytest.fixture(scope="module")
def tokenizer():
    return as_transformers(train_bytelevel_bpe([corpora.shakespeare()[:60_000]], vocab_size=400))


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny GPT trained for a few seconds on Shakespeare, so greedy text is not one token repeated."""
    torch.manual_seed(0)
    ids = torch.tensor(tokenizer.encode(corpora.shakespeare()[:60_000]))
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=2, n_head=4, n_embd=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        starts = torch.randint(0, len(ids) - 65, (16,))
        rows = torch.stack([ids[s:s + 65] for s in starts])
        _, loss = model(rows[:, :-1], rows[:, 1:].contiguous())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def llmlab_greedy(model, tokenizer, n=40):
    prompt = tokenizer.encode(PROMPT, add_special_tokens=False)
    out = generate(model, torch.tensor([prompt]), n, temperature=0, stop_tokens=[tokenizer.eos_token_id])
    return prompt, out[0, len(prompt):].tolist()


def test_every_parameter_has_a_gguf_name():
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=3, n_head=2, n_embd=8))
    names = {gguf_tensor_name(n) for n in model.state_dict()} - {None}
    assert {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias",
            "blk.2.attn_qkv.weight", "blk.0.ffn_down.bias", "blk.1.attn_norm.weight"} <= names
    assert len(names) == len(model.state_dict()) - 1  # all but the tied output matrix, each its own name
    with pytest.raises(ValueError):
        gguf_tensor_name("transformer.h.0.attn.rotary.weight")


def test_transformers_export_reproduces_llmlab(model, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, pipeline

    folder = export_transformers(model, tokenizer, tmp_path / "hf")
    prompt, ours = llmlab_greedy(model, tokenizer)
    assert len(set(ours)) > 3  # a real test: varied tokens, not one repeated
    assert greedy_tokens_transformers(folder, prompt, 40) == ours
    pipe = pipeline("text-generation", model=str(folder))
    text = pipe(PROMPT, max_new_tokens=40, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert text == tokenizer.decode(ours, skip_special_tokens=True)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([prompt + ours])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)[0], atol=1e-4, rtol=1e-4)


def test_gguf_export_reproduces_llmlab_greedy_tokens_and_logits(model, tokenizer, tmp_path):
    path = export_gguf(model, tokenizer, tmp_path / "model.gguf")
    prompt, ours = llmlab_greedy(model, tokenizer)
    llm = load_gguf(path, exact=True, logits_all=True)
    try:
        assert greedy_tokens_llama_cpp(llm, prompt, 40) == ours
        ids = prompt + ours
        with torch.no_grad():
            expected = model(torch.tensor([ids]))[0][0]
        torch.testing.assert_close(llama_cpp_logits(llm, ids), expected, atol=2e-3, rtol=1e-3)
        for text in (PROMPT, "  Wherefore art thou?\n\n", "naïve café, 1234 — ok", "strawberry"):
            assert llm.tokenize(text.encode(), add_bos=False) == tokenizer.encode(text, add_special_tokens=False)
    finally:
        llm.close()


def test_gguf_header_describes_a_gpt2(model, tokenizer, tmp_path):
    meta = gguf_metadata(export_gguf(model, tokenizer, tmp_path / "model.gguf"))
    c = model.config
    assert meta["general.architecture"] == "gpt2"
    assert (meta["gpt2.context_length"], meta["gpt2.embedding_length"], meta["gpt2.block_count"],
            meta["gpt2.attention.head_count"], meta["gpt2.feed_forward_length"]) == (
        c.block_size, c.n_embd, c.n_layer, c.n_head, 4 * c.n_embd)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id


def test_f16_gguf_is_about_half_the_size_and_still_greedy(model, tokenizer, tmp_path):
    f32 = export_gguf(model, tokenizer, tmp_path / "f32.gguf")
    f16 = export_gguf(model, tokenizer, tmp_path / "f16.gguf", dtype="f16")
    assert 0.45 < f16.stat().st_size / f32.stat().st_size < 0.65  # the tokenizer and norms stay full size
    prompt, ours = llmlab_greedy(model, tokenizer, n=15)
    llm = load_gguf(f16)
    try:
        assert greedy_tokens_llama_cpp(llm, prompt, 15) == ours
    finally:
        llm.close()


def test_exports_refuse_what_they_cannot_write(tokenizer, tmp_path):
    no_bias = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False))
    with pytest.raises(ValueError, match="bias"):
        export_gguf(no_bias, tokenizer, tmp_path / "x.gguf")
    small = GPT(GPTConfig(vocab_size=100, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="embeddings"):
        export_gguf(small, tokenizer, tmp_path / "x.gguf")
    word_level = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="byte-level BPE"):
        export_gguf(small, word_level, tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="dtype"):
        export_gguf(small, tokenizer, tmp_path / "x.gguf", dtype="q4")
