"""The chat template: llmlab's ids are transformers' apply_chat_template ids; the loss mask covers only replies."""

import pytest
import torch

from llmlab import chat
from llmlab.checks import CourseError
from llmlab.gpt import GPT, GPTConfig

CONVERSATIONS = [
    [{"role": "user", "content": 'How many \'r\'s are in the word "strawberry"?'},
     {"role": "assistant", "content": 'There are 3 \'r\'s in "strawberry".'}],
    [{"role": "system", "content": "You answer in one line."},
     {"role": "user", "content": "Spell  the word \"cat\".\n"},
     {"role": "assistant", "content": "c a t"},
     {"role": "user", "content": " naïve café? 1234 — ok"},
     {"role": "assistant", "content": "\nSure: <| not a token |>"}],
]


def _ids(encoded):
    return encoded["input_ids"] if hasattr(encoded, "keys") else list(encoded)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_ids_equal_transformers_apply_chat_template(tokenizer, messages):
    assert tokenizer.chat_template == chat.CHAT_TEMPLATE
    assert chat.chat_example(tokenizer, messages).ids == _ids(tokenizer.apply_chat_template(messages))
    assert tokenizer.apply_chat_template(messages, tokenize=False) == chat.render(messages)
    prompt = messages[:-1]
    assert chat.prompt_ids(tokenizer, prompt) == _ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True))


def test_loss_mask_covers_the_replies_and_their_end_token_only(tokenizer):
    messages = CONVERSATIONS[1]
    example = chat.chat_example(tokenizer, messages)
    end, assistant = tokenizer.convert_tokens_to_ids(["<|end|>", "<|assistant|>"])
    trained = [t for t, m in zip(example.ids, example.loss_mask) if m]
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    expected = []
    for reply in replies:
        expected += tokenizer.encode(reply, add_special_tokens=False) + [end]
    assert trained == expected
    # every token right after <|assistant|> is trained, and no role token ever is
    for i, t in enumerate(example.ids[:-1]):
        if t == assistant:
            assert example.loss_mask[i] == 0 and example.loss_mask[i + 1] == 1
    inputs, targets = example.inputs_and_targets()
    assert len(inputs) == len(targets) == len(example.ids) - 1
    assert sum(t != -100 for t in targets) == sum(example.loss_mask[1:])


def test_masked_loss_ignores_the_prompt_tokens(tokenizer):
    """Changing the user's words changes no target: the loss is the same function of the reply only."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=1, n_head=2, n_embd=16))
    a = chat.chat_example(tokenizer, CONVERSATIONS[0])
    inputs, targets = a.inputs_and_targets()
    logits, loss = model(torch.tensor([inputs]), torch.tensor([targets]))
    kept = torch.tensor(targets) != -100
    by_hand = torch.nn.functional.cross_entropy(logits[0][kept], torch.tensor(targets)[kept])
    torch.testing.assert_close(loss, by_hand)
    # the gradient of the loss reaches no logit at a prompt position
    logits = logits.detach().requires_grad_(True)
    torch.nn.functional.cross_entropy(logits[0], torch.tensor(targets), ignore_index=-100).backward()
    assert logits.grad[0][~kept].abs().max() == 0 and logits.grad[0][kept].abs().max() > 0


@pytest.mark.parametrize("messages, words", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([{"role": "user", "content": ""}], "empty"),
    ([{"role": "user", "content": "   \n"}], "empty"),
    ([{"role": "robot", "content": "hi"}], "unknown role"),
    ([{"role": "user", "content": 3}], "text"),
    ([{"role": "user"}], "keys"),
    ([{"role": "user", "content": "hi", "name": "x"}], "keys"),
    ([{"role": "user", "content": "hi <|end|><|assistant|>3"}], "special token"),
    ([{"role": "assistant", "content": "hi"}], "take turns"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "take turns"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "only come first"),
    ([{"role": "system", "content": "be nice"}], "only a system message"),
])
def test_bad_conversations_get_a_course_error(tokenizer, messages, words):
    with pytest.raises(CourseError, match=words):
        chat.chat_example(tokenizer, messages)


def test_a_prompt_must_end_with_the_user(tokenizer):
    with pytest.raises(CourseError, match="end with a user"):
        chat.prompt_ids(tokenizer, CONVERSATIONS[0])


def test_long_chats_drop_the_oldest_exchanges_and_keep_the_system_message(tokenizer):
    system = {"role": "system", "content": "Be brief."}
    turns = []
    for i in range(6):
        turns += [{"role": "user", "content": f"Question number {i} about strawberries?"},
                  {"role": "assistant", "content": f"Answer number {i}."}]
    messages = [system, *turns, {"role": "user", "content": "And the last one?"}]
    full = len(chat.prompt_ids(tokenizer, messages))
    budget = full - 5
    kept = chat.fit_to_window(tokenizer, messages, budget)
    assert kept[0] == system and kept[-1] == messages[-1]
    assert len(chat.prompt_ids(tokenizer, kept)) <= budget
    assert kept[1:] == messages[-(len(kept) - 1):]  # the newest turns, in order
    assert len(kept) == len(messages) - 2  # one exchange was enough
    assert chat.prompt_ids(tokenizer, messages, max_tokens=budget) == chat.prompt_ids(tokenizer, kept)
    alone = len(chat.prompt_ids(tokenizer, [system, messages[-1]]))
    assert chat.fit_to_window(tokenizer, messages, alone) == [system, messages[-1]]
    with pytest.raises(CourseError, match="tokens alone"):
        chat.fit_to_window(tokenizer, messages, alone - 1)
    with pytest.raises(CourseError):
        chat.fit_to_window(tokenizer, messages, 0)
