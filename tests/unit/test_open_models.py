"""The loaders of real open models, run on models the course exports or builds locally (nothing downloaded)."""

import pytest
import torch

from llmlab import corpora, open_models
from llmlab.export import export_gguf, export_transformers
from llmlab.generation import generate_text
from llmlab.gpt import GPT, GPTConfig
from llmlab.tokenizer import as_transformers, train_bytelevel_bpe


@pytest.fixture(scope="module")
def tokenizer():
    return as_transformers(train_bytelevel_bpe([corpora.shakespeare()[:30_000]], vocab_size=320))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()


def test_gpt2_pipeline_runs_the_course_export_like_llmlab(model, tokenizer, tmp_path):
    folder = export_transformers(model, tokenizer, tmp_path / "gpt2-like")
    pipe = open_models.gpt2_pipeline(folder)
    prompt = "The capital of Belgium is Brussels. The capital of France is"
    expected = generate_text(model, tokenizer, prompt, max_new_tokens=12, temperature=0,
                             stop_tokens=[tokenizer.eos_token_id])
    assert open_models.continue_text(pipe, prompt, max_new_tokens=12) == expected


def test_missing_models_say_how_to_get_them_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LLMLAB_GGUF_CHAT", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert open_models.gpt2_pipeline(tmp_path / "nothing-here") is None
    assert open_models.local_seq2seq(str(tmp_path / "no-t5")) == (None, None)
    assert open_models.find_gguf_chat_model() is None
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert any("hf download" in line and "GGUF" in line for line in lines)
    assert all(len(line) < 250 for line in lines)


def test_seq2seq_loader_runs_a_t5_built_locally(tokenizer, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    model, t5_tokenizer = open_models.local_seq2seq(str(tmp_path / "t5"))
    assert model is not None and model.config.model_type == "t5"
    prompt = "Summarize: ROMEO: But soft! JULIET: Ay me!"
    text = open_models.seq2seq_generate(model, t5_tokenizer, prompt, max_new_tokens=8)
    with torch.no_grad():
        ids = model.generate(**t5_tokenizer(prompt, return_tensors="pt"), max_new_tokens=8, do_sample=False)
    assert text == t5_tokenizer.decode(ids[0], skip_special_tokens=True)
    beams = open_models.seq2seq_generate(model, t5_tokenizer, prompt, max_new_tokens=8, num_beams=3)
    assert isinstance(beams, str)


def test_gguf_chat_finder_and_loader_on_the_course_export(model, tokenizer, tmp_path, monkeypatch):
    path = export_gguf(model, tokenizer, tmp_path / "cache" / "models--me--Tiny-Instruct-GGUF" / "snapshots"
                       / "abc" / "tiny-instruct.gguf")
    monkeypatch.delenv("LLMLAB_GGUF_CHAT", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    assert open_models.find_gguf_chat_model() == path  # found in the Hugging Face cache
    monkeypatch.setenv("LLMLAB_GGUF_CHAT", str(path))
    assert open_models.find_gguf_chat_model() == path  # or where the variable points
    llm = open_models.load_gguf_chat(path, n_ctx=64)
    try:
        answer = open_models.chat(llm, "How many 'r's are in strawberry?", max_tokens=5)
        assert isinstance(answer, str)
    finally:
        llm.close()


def test_chat_stays_inside_the_positions_a_small_model_learned(model, tokenizer, tmp_path):
    """The test model learned 64 positions; llama.cpp keeps a context of at least 256, and reading past position
    64 would abort the process. chat() cuts the answer to fit, and refuses a question that cannot fit."""
    import llama_cpp

    path = export_gguf(model, tokenizer, tmp_path / "tiny-instruct.gguf")
    llm = open_models.load_gguf_chat(path, n_ctx=256)
    try:
        assert llama_cpp.llama_model_n_ctx_train(llm.model) == 64 and llm.n_ctx() >= 256
        answer = open_models.chat(llm, "How many 'r's are in strawberry?", max_tokens=500)
        assert len(llm.tokenize(answer.encode(), add_bos=False)) <= 64
        with pytest.raises(ValueError, match="reads at most 64"):
            open_models.chat(llm, "How many 'r's are in the word strawberry? " * 10)
    finally:
        llm.close()


def test_chat_prompt_fills_in_the_template_stored_in_the_gguf(model, tokenizer, tmp_path):
    path = export_gguf(model, tokenizer, tmp_path / "tiny.gguf")
    llm = open_models.load_gguf_chat(path, n_ctx=256)
    try:
        messages = [{"role": "user", "content": "How many 'r's are in strawberry?"}]
        assert "How many 'r's are in strawberry?" in open_models.chat_prompt(llm, messages)  # the fallback format
        llm.metadata["tokenizer.chat_template"] = (  # ChatML, the template of Qwen and many others
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        assert open_models.chat_prompt(llm, messages) == (
            "<|im_start|>user\nHow many 'r's are in strawberry?<|im_end|>\n<|im_start|>assistant\n")
    finally:
        llm.close()


def test_gpt2_tokenizer_from_the_shipped_files_gives_gpt2s_ids():
    tokenizer = open_models.gpt2_tokenizer()
    assert len(tokenizer) == 50257
    assert tokenizer.encode("Megatron loves only himself") == [42672, 23484, 10408, 691, 2241]
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode(" strawberry")) == ["Ġstrawberry"]
