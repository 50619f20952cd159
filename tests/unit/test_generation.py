import math

import pytest
import torch
import torch.nn.functional as F
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from llmlab.generation import (apply_temperature, check_min_p, check_repetition_penalty, fastest_latencies,
                               few_shot_accuracy, repeated_sequence_loss,
                               continuation_logprob, few_shot_choice_accuracy,
                               few_shot_prompt, generate, generate_text, next_token_distribution,
                               repeated_ngram_fraction, sample_next_token, stream_tokens, token_latencies,
                               top_k_filter, top_p_filter)
from llmlab.gpt import GPT, GPTConfig, KVCache


def tiny_gpt(seed=0, block_size=32):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()


def random_logits(seed=0, vocab=50, rows=4):
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


# --- the sampling controls -----------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 7, 49])
def test_top_k_keeps_the_k_largest_like_transformers(k):
    logits = random_logits()
    kept = top_k_filter(logits, k)
    assert (torch.isfinite(kept).sum(dim=-1) == k).all()
    top = torch.topk(logits, k, dim=-1).indices
    assert torch.isfinite(kept.gather(-1, top)).all()
    reference = TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(torch.isfinite(kept), torch.isfinite(reference))


def test_top_k_none_or_larger_than_the_vocabulary_keeps_everything():
    logits = random_logits()
    assert torch.equal(top_k_filter(logits, None), logits)
    assert torch.equal(top_k_filter(logits, 1000), logits)
    with pytest.raises(ValueError):
        top_k_filter(logits, 0)


def test_top_p_on_a_hand_checked_distribution():
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    kept = lambda p: torch.isfinite(top_p_filter(logits, p)).tolist()  # noqa: E731
    assert kept(0.4) == [False, True, False, False]  # 0.5 alone is over 0.4
    assert kept(0.7) == [False, True, False, True]  # 0.5 + 0.3 = 0.8 is the smallest set over 0.7
    assert kept(0.85) == [False, True, True, True]  # needs 0.15 too: 0.95
    assert kept(0.99) == [True, True, True, True]
    assert kept(1e-6) == [False, True, False, False]  # p -> 0 is greedy


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.97])
def test_top_p_keeps_the_smallest_set_over_p(p):
    logits = random_logits(seed=1)
    kept = torch.isfinite(top_p_filter(logits, p))
    probs = F.softmax(logits, dim=-1)
    for row in range(logits.size(0)):
        mass = probs[row][kept[row]]
        assert mass.sum() >= p - 1e-6  # over p ...
        assert mass.sum() - mass.min() < p  # ... and smallest: without its least likely token it is not
        dropped = probs[row][~kept[row]]
        assert dropped.numel() == 0 or mass.min() >= dropped.max()  # the most likely tokens
    reference = TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(kept, torch.isfinite(reference))


def test_temperature_matches_softmax_of_scaled_logits():
    logits = random_logits()
    for t in (0.3, 1.0, 2.5):
        assert torch.allclose(next_token_distribution(logits, t), F.softmax(logits / t, dim=-1))
    assert torch.equal(apply_temperature(logits, 2.0), logits / 2.0)
    with pytest.raises(ValueError):
        apply_temperature(logits, -1.0)


def test_temperature_towards_zero_is_greedy():
    logits = random_logits(rows=8)
    greedy = logits.argmax(dim=-1)
    assert torch.equal(sample_next_token(logits, temperature=0), greedy)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert torch.equal(sample_next_token(logits, temperature=1e-3, generator=g), greedy)
    assert torch.allclose(next_token_distribution(logits, 1e-3), F.one_hot(greedy, logits.size(-1)).float())


def test_samples_follow_the_reshaped_distribution():
    logits = random_logits(vocab=6, rows=1)[0]
    probs = next_token_distribution(logits, temperature=0.8, top_k=4, top_p=0.9)
    g = torch.Generator().manual_seed(0)
    draws = sample_next_token(logits.expand(40000, -1), temperature=0.8, top_k=4, top_p=0.9, generator=g)
    frequencies = torch.bincount(draws, minlength=6).float() / draws.numel()
    assert torch.allclose(frequencies, probs, atol=0.01)
    assert (frequencies[probs == 0] == 0).all()  # filtered tokens are never drawn


# --- the KV cache and the generation loop ---------------------------------------------------------------------

def test_kv_cache_logits_equal_the_uncached_ones():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model(idx)
        cache = KVCache()
        prefix, _ = model(idx[:, :8], cache=cache)  # a prompt at once, then one token at a time
        steps = [model(idx[:, t:t + 1], cache=cache)[0] for t in range(8, 20)]
    cached = torch.cat([prefix, *steps], dim=1)
    assert torch.allclose(cached, full, atol=1e-5)


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, top_k=10, top_p=0.9)])
def test_generate_with_and_without_cache_gives_the_same_tokens(sampling):
    model = tiny_gpt(block_size=24)
    prompt = torch.tensor([[1, 2, 3, 4]])
    # 40 new tokens overflow the 24-token window: the sliding window must agree too
    runs = [generate(model, prompt, 40, use_cache=use_cache, generator=torch.Generator().manual_seed(5),
                     **sampling) for use_cache in (True, False)]
    assert runs[0].shape == (1, 44)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, :4], prompt)


def test_greedy_generate_equals_a_hand_written_argmax_loop():
    model = tiny_gpt()
    idx = torch.tensor([[5, 6, 7]])
    expected = idx
    with torch.no_grad():
        for _ in range(10):
            logits, _ = model(expected)
            expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate(model, idx, 10, temperature=0), expected)
    assert torch.equal(generate(model, idx, 10, top_k=1), expected)  # top-1 sampling is greedy too


def test_generation_stops_at_a_stop_token_and_keeps_it():
    model = tiny_gpt()
    idx = torch.tensor([[5, 6, 7]])
    free = generate(model, idx, 12, temperature=0)[0, 3:].tolist()
    stop = free[4]
    first = free.index(stop)
    stopped = generate(model, idx, 12, temperature=0, stop_tokens=[stop])[0, 3:].tolist()
    assert stopped == free[:first + 1]


def test_generate_restores_training_mode_and_rejects_bad_input():
    model = tiny_gpt().train()
    generate(model, torch.tensor([1, 2]), 2)
    assert model.training
    with pytest.raises(ValueError):
        generate(model, torch.zeros(2, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 2)


class CharTokenizer:
    """Characters a..z as ids 1..26; 0 is end of text."""
    eos_token_id = 0

    def encode(self, text, add_special_tokens=False):
        return [ord(c) - 96 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 96) if i else "<eos>" for i in ids)


def test_generate_text_returns_only_the_continuation():
    model = tiny_gpt()
    tokenizer = CharTokenizer()
    ids = generate(model, torch.tensor([tokenizer.encode("abc")]), 6, temperature=0)[0, 3:].tolist()
    text = generate_text(model, tokenizer, "abc", max_new_tokens=6, temperature=0)
    assert text == tokenizer.decode(ids)
    dreamed = generate(model, torch.tensor([[0]]), 3, temperature=0)[0, 1:].tolist()  # from end-of-text
    assert generate_text(model, tokenizer, "", max_new_tokens=3, temperature=0) == tokenizer.decode(dreamed)


def test_streamed_tokens_are_the_generated_ones_and_latencies_count_them():
    model = tiny_gpt()
    idx = torch.tensor([[3, 1, 4]])
    streamed = list(stream_tokens(model, idx, 9, temperature=0))
    assert streamed == generate(model, idx, 9, temperature=0)[0, 3:].tolist()
    times = token_latencies(model, idx, 9, use_cache=False)
    assert len(times) == 9 and all(t > 0 for t in times)


def test_fastest_latencies_take_each_position_at_its_fastest():
    runs = [[3.0, 1.0, 2.0], [1.0, 2.0, 5.0], [2.0, 4.0, 0.5]]
    assert fastest_latencies(runs) == [1.0, 1.0, 0.5]


def test_repeated_ngram_fraction_on_known_sequences():
    assert repeated_ngram_fraction([1, 2, 3, 4, 5, 6], n=2) == 0.0
    assert repeated_ngram_fraction([7, 7, 7, 7, 7], n=2) == 3 / 4  # (7,7) four times: three are repeats
    assert repeated_ngram_fraction([1, 2, 1, 2, 1, 2], n=2) == 3 / 5
    assert repeated_ngram_fraction([1], n=4) == 0.0


def test_few_shot_prompt_layout():
    assert few_shot_prompt([], "dog") == "dog ->"
    assert few_shot_prompt([("cat", "cats")], "dog", instruction="Plurals:") == "Plurals:\ncat -> cats\ndog ->"
    assert few_shot_prompt([("a", "b")], "c", template="Q: {x}\nA: {y}") == "Q: a\nA: b\nQ: c\nA:"


class AnswersA(torch.nn.Module):
    """A 'model' that writes "a" and then ends the line, whatever the prompt."""

    def __init__(self, tokenizer):
        super().__init__()
        self.config = GPTConfig(vocab_size=len(tokenizer.chars), block_size=256)
        self.a, self.newline = tokenizer.chars.index("a"), tokenizer.chars.index("\n")
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None, cache=None):
        logits = torch.zeros(*idx.shape, self.config.vocab_size)
        logits[0, -1, self.newline if idx[0, -1] == self.a else self.a] = 10.0
        return logits, None


class CharTokenizer2:
    chars = "\n ->abcdefghijklmnopqrstuvwxyz"
    eos_token_id = None

    def encode(self, text, add_special_tokens=False):
        return [self.chars.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


def test_few_shot_accuracy_scores_exact_first_lines():
    tokenizer = CharTokenizer2()
    pairs = [("x", "a"), ("y", "b"), ("z", "a"), ("w", "c")]
    assert few_shot_accuracy(AnswersA(tokenizer), tokenizer, pairs, n_shots=2) == 0.5
    assert few_shot_accuracy(AnswersA(tokenizer), tokenizer, pairs, n_shots=0, max_new_tokens=1) == 0.5


def test_checkers_pass_correct_solutions_and_hint_on_placeholders(capsys):
    import torch.nn.functional as F

    def min_p_filter(logits, min_p):
        probs = F.softmax(logits, dim=-1)
        return logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))

    def repetition_penalty(logits, previous_ids, penalty):
        seen = logits.gather(-1, previous_ids)
        return logits.scatter(-1, previous_ids, torch.where(seen > 0, seen / penalty, seen * penalty))

    def placeholder(*args):
        raise NotImplementedError

    assert check_min_p(min_p_filter) and check_repetition_penalty(repetition_penalty)
    assert not check_min_p(placeholder) and not check_repetition_penalty(placeholder)
    assert not check_min_p(lambda logits, p: logits)  # keeps everything: wrong
    out = capsys.readouterr().out
    assert out.count("✓") == 2 and out.count("Not done yet") == 2 and "should keep" in out


def test_continuation_logprob_is_the_sum_of_token_log_probabilities():
    model = tiny_gpt()
    tokenizer = CharTokenizer()
    context, answer = tokenizer.encode("abcd"), tokenizer.encode("ef")
    with torch.no_grad():
        logits, _ = model(torch.tensor([context + answer[:-1]]))
    expected = -F.cross_entropy(logits[0, -2:], torch.tensor(answer), reduction="sum").item()
    assert abs(continuation_logprob(model, tokenizer, "abcd", "ef") - expected) < 1e-5


def test_few_shot_choice_accuracy_picks_the_likeliest_candidate():
    tokenizer = CharTokenizer2()
    pairs = [("x", "a"), ("y", "b"), ("z", "a"), ("w", "c"), ("v", "d")]
    # the model always writes "a": it chooses "a" for every query, right for the two whose answer is "a"
    assert few_shot_choice_accuracy(AnswersA(tokenizer), tokenizer, pairs, 2, n_choices=4) == 2 / 5


class PerfectCopier(torch.nn.Module):
    """Predicts, at position t >= L, the token at t - L + 1 (what a repeat of length L needs); uniform before."""

    def __init__(self, vocab, length):
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab, block_size=256)
        self.length = length
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None, cache=None):
        logits = torch.zeros(*idx.shape, self.config.vocab_size)
        for t in range(self.length, idx.size(1)):
            logits[torch.arange(idx.size(0)), t, idx[:, t - self.length + 1]] = 50.0
        return logits, None


def test_repeated_sequence_loss_sees_copying():
    first, repeat = repeated_sequence_loss(PerfectCopier(200, 30), length=30)
    assert abs(first - math.log(200)) < 1e-4 and repeat < 1e-4  # uniform guesses, then perfect copies
    first, repeat = repeated_sequence_loss(tiny_gpt(), length=10)  # an untrained model copies nothing
    assert abs(first - repeat) < 0.2


# --- batched generation -------------------------------------------------------------------------------------------

def _tiny_gpt(seed=0, block_size=48):
    from llmlab.gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=97, block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()


def test_padded_rows_get_the_logits_they_get_alone():
    model = _tiny_gpt()
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    longest = max(map(len, prompts))
    idx = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
    pad = torch.tensor([longest - len(p) for p in prompts])
    batched, _ = model(idx, pad_lengths=pad)
    for row, prompt in enumerate(prompts):
        alone, _ = model(torch.tensor([prompt]))
        assert torch.allclose(batched[row, -len(prompt):], alone[0], atol=1e-5)


def test_batched_greedy_generation_equals_row_by_row():
    from llmlab.generation import generate, generate_batch

    model = _tiny_gpt(1)
    prompts = [[3, 4, 5], [6], [7, 8, 9, 10, 11, 12, 13], [20, 21]]
    stop = {17}
    batched = generate_batch(model, prompts, 12, temperature=0, stop_tokens=stop)
    for prompt, got in zip(prompts, batched):
        out = generate(model, torch.tensor([prompt]), 12, temperature=0, stop_tokens=stop)[0, len(prompt):].tolist()
        if out and out[-1] in stop:
            out = out[:-1]
        assert got == out


def test_batched_sampling_is_seeded_and_stops_at_the_window():
    from llmlab.generation import generate_batch

    model = _tiny_gpt(2, block_size=16)
    prompts = [[1, 2, 3]] * 5
    first = generate_batch(model, prompts, 50, temperature=1.0, generator=torch.Generator().manual_seed(0))
    again = generate_batch(model, prompts, 50, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert first == again
    assert all(len(row) == 16 - 3 for row in first)  # the window ends every row
    assert len({tuple(r) for r in first}) > 1  # rows are sampled independently


def test_batched_generation_refuses_what_cannot_run():
    from llmlab.checks import CourseError
    from llmlab.generation import generate_batch

    model = _tiny_gpt(block_size=16)
    for prompts, n in [([], 5), ([[1], []], 5), ([[1] * 16], 5), ([[1]], 0), ([[1]], 10**9)]:
        with pytest.raises(CourseError):
            generate_batch(model, prompts, n, temperature=0)
