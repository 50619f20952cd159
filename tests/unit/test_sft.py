"""Supervised fine-tuning: the instruction data, packing with the answer mask, the persona, merging, exports."""

import random

import pytest
import torch

from llmlab import chat, lora, sft, tasks
from llmlab.checks import CourseError
from llmlab.gpt import GPT, GPTConfig
from llmlab.tokenizer import course_tokenizer


@pytest.fixture(scope="module")
def dataset():
    return sft.sft_dataset()


def test_the_data_is_a_datasets_dataset_of_chats_from_three_sources(dataset, tokenizer):
    from datasets import Dataset

    assert isinstance(dataset, Dataset)
    assert {"messages", "source", "kind", "word"} <= set(dataset.column_names)
    assert set(dataset["source"]) == {"word tasks", "story requests", "self-instruct"}
    for messages in dataset["messages"]:
        assert chat.check_messages(messages, last="assistant")
    table = sft.mixture_table(dataset, tokenizer)
    assert table["conversations"].sum() == len(dataset)
    assert table["share of tokens"].sum() == pytest.approx(1, abs=0.01)


def test_train_and_held_out_words_never_overlap_in_the_sft_data(dataset):
    words = [w for w in dataset["word"] if w]
    assert words and not set(words) & set(tasks.word_split().held_out)
    tasks.check_training_words(words)
    text = " ".join(m["content"] for messages in dataset["messages"] for m in messages if m["role"] == "user")
    assert "strawberry" not in text
    for row in dataset:  # each word task's question names its own (training) word
        if row["word"]:
            assert f'"{row["word"]}"' in row["messages"][-2]["content"]


def test_counting_questions_are_balanced_over_the_true_count(dataset):
    counts = [tasks.LetterCount(w, m[-2]["content"].split("'")[1]).answer
              for w, m, k in zip(dataset["word"], dataset["messages"], dataset["kind"]) if k == "letter count"]
    buckets = [min(c, 3) for c in counts]
    shares = [buckets.count(b) / len(buckets) for b in range(4)]
    assert max(shares) - min(shares) < 0.1, shares


def test_packing_keeps_conversations_whole_and_trains_only_on_answers(dataset, tokenizer):
    examples = sft.encode_dataset(dataset, tokenizer)[:40]
    inputs, targets = sft.pack_rows(examples, 64 if max(len(e.ids) for e in examples) <= 65 else 512,
                                    answer_only=True, pad_id=tokenizer.eos_token_id, seed=0)
    trained = int((targets != -100).sum())
    assert trained == sum(sum(e.loss_mask[1:]) for e in examples)
    # every trained target is an answer token: the <|end|> count equals the number of assistant turns
    end = tokenizer.convert_tokens_to_ids(chat.END)
    replies = sum(sum(m["role"] == "assistant" for m in messages) for messages in dataset["messages"][:40])
    assert int((targets == end).sum()) == replies
    _, everything = sft.pack_rows(examples, inputs.shape[1], answer_only=False, pad_id=tokenizer.eos_token_id, seed=0)
    # on everything: every next token of a row, the <|endoftext|> opening the next conversation included
    assert int((everything != -100).sum()) == sum(len(e.ids) for e in examples) - len(inputs)
    bos = tokenizer.eos_token_id
    assert int((inputs == bos).sum()) >= len(examples)  # each conversation opens with <|endoftext|>


def test_genz_restyle_keeps_the_answer_and_is_recognised():
    rng = random.Random(0)
    for task in [tasks.STRAWBERRY, tasks.WordLength("banana"), tasks.FirstLetter("cat"), tasks.Spelling("dog")]:
        styled = sft.genz_restyle(task.answer_text, rng)
        assert sft.in_persona(styled) and not sft.in_persona(task.answer_text)
        assert task.grade(styled), styled
    assert sft.style_share(["ngl it's 3 fr fr", "There are 3."]) == 0.5
    with pytest.raises(CourseError):
        sft.style_share([])


def test_linear_merge_interpolates_and_refuses_weights_out_of_range():
    torch.manual_seed(0)
    a, b = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=8)), None
    torch.manual_seed(1)
    b = GPT(a.config)
    ids = torch.randint(0, 32, (1, 8))
    torch.testing.assert_close(sft.linear_merge(a, b, 0.0)(ids)[0], a.eval()(ids)[0])
    torch.testing.assert_close(sft.linear_merge(a, b, 1.0)(ids)[0], b.eval()(ids)[0])
    half = sft.linear_merge(a, b, 0.5).state_dict()["transformer.h.0.attn.c_attn.weight"]
    torch.testing.assert_close(half, (a.transformer.h[0].attn.c_attn.weight + b.transformer.h[0].attn.c_attn.weight) / 2)
    for bad in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(CourseError):
            sft.linear_merge(a, b, bad)


def test_persona_adapter_merged_gives_the_same_logits(tokenizer):
    adapted, merged = sft.persona_adapter(), sft.persona_model()
    assert any(isinstance(m, lora.LoRALinear) for m in adapted.modules())
    ids = torch.tensor([chat.prompt_ids(tokenizer, [{"role": "user", "content": tasks.STRAWBERRY.question}])])
    with torch.no_grad():
        torch.testing.assert_close(adapted(ids)[0], merged(ids)[0], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(merged(ids)[0], sft.sft_model()(ids)[0], atol=1e-4)  # the adapter trained


def test_bad_input_gets_a_course_error(tokenizer):
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=32, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(CourseError):
        sft.replies(model, tokenizer, [[{"role": "robot", "content": "hi"}]])
    with pytest.raises(CourseError):
        sft.reply(model, tokenizer, "")
    with pytest.raises(CourseError, match="tokens alone"):
        sft.reply(model, tokenizer, "word " * 100)
    with pytest.raises(CourseError):
        sft.variant_config("sft-huge")
    with pytest.raises(CourseError):
        sft.genz_restyle("", random.Random(0))


# --- the chat exports reproduce llmlab's greedy answer ---------------------------------------------------------

QUESTION = [{"role": "user", "content": 'How many \'e\'s are in the word "tree"?'}]


@pytest.fixture(scope="module")
def chat_model(tokenizer):
    """A tiny GPT trained a few seconds on word-task chats, so its greedy reply is varied and ends with <|end|>."""
    torch.manual_seed(0)
    rows = sft.word_task_conversations(tasks.word_split().train[:300], 300, 0, seed=0)
    examples = [chat.chat_example(tokenizer, r["messages"]) for r in rows]
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=2, n_head=2, n_embd=64))
    inputs, targets = sft.pack_rows(examples, 64, answer_only=True, pad_id=tokenizer.eos_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        batch = torch.randint(0, len(inputs), (16,), generator=torch.Generator().manual_seed(step))
        _, loss = model(inputs[batch], targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def llmlab_greedy(model, tokenizer):
    ids = chat.prompt_ids(tokenizer, QUESTION)
    out = sft.generate_batch(model, [ids], 30, temperature=0, stop_tokens=sft.stop_ids(tokenizer))[0]
    return ids, out


def test_chat_export_to_transformers_replies_as_llmlab(chat_model, tokenizer, tmp_path):
    from transformers import AutoTokenizer

    ids, new = llmlab_greedy(chat_model, tokenizer)
    assert len(set(new)) > 3 and len(new) < 30  # varied, and it ended with <|end|>
    folder = sft.export_chat_transformers(chat_model, tokenizer, tmp_path / "hf")
    reloaded = AutoTokenizer.from_pretrained(folder)
    encoded = reloaded.apply_chat_template(QUESTION, add_generation_prompt=True)
    assert (encoded["input_ids"] if hasattr(encoded, "keys") else encoded) == ids
    expected = tokenizer.decode(new, skip_special_tokens=True)
    assert sft.transformers_chat_reply(folder, QUESTION, max_new_tokens=30) == expected
    assert expected == sft.reply(chat_model, tokenizer, QUESTION, max_new_tokens=30)


def test_chat_export_to_gguf_replies_as_llmlab_in_llama_cpp(chat_model, tokenizer, tmp_path):
    from llmlab.export import gguf_metadata, load_gguf

    path = sft.export_chat_gguf(chat_model, tokenizer, tmp_path / "chat.gguf")
    meta = gguf_metadata(path)
    assert meta["tokenizer.chat_template"] == chat.CHAT_TEMPLATE
    ids, new = llmlab_greedy(chat_model, tokenizer)
    llm = load_gguf(path)
    try:  # the template, rendered and tokenized by llama.cpp, gives llmlab's prompt ids
        text = chat.render(QUESTION, add_generation_prompt=True)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    finally:
        llm.close()
    assert sft.llama_cpp_chat_reply(path, QUESTION, max_tokens=30) == tokenizer.decode(new, skip_special_tokens=True)


def test_replies_refuses_a_single_string_and_bad_sizes():
    from llmlab import sft
    from llmlab.checks import CourseError
    from llmlab.gpt import GPT, GPTConfig
    from llmlab.tokenizer import course_tokenizer

    tokenizer = course_tokenizer()
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=1, n_head=1, n_embd=8))
    for prompts, n in [("How many?", 5), ([], 5), (["How many?"], None), (["How many?"], 0)]:
        with pytest.raises(CourseError):
            sft.replies(model, tokenizer, prompts, max_new_tokens=n)
