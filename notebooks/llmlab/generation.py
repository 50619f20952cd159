"""Turning a language model into text: the sampling controls and the generation loop.

A model gives logits for the next token. Each control reshapes the distribution they define before one token
is drawn from it:

    temperature  divides the logits: below 1 sharpens the distribution, above 1 flattens it; 0 means greedy
    top_k        keeps the k most likely tokens
    top_p        keeps the smallest set of most likely tokens whose probabilities add up to at least p

`generate` repeats "logits -> reshape -> draw -> append" until max_new_tokens or a stop token. With
use_cache=True it feeds the model only the newest token and keeps every earlier token's keys and values in a
`KVCache`: the same logits for a fraction of the work.

One call writes at most `checks.MAX_NEW_TOKENS` (10,000) new tokens; the controls are checked where they come in
(a NaN temperature or a top_p of 2 is refused in one sentence instead of giving NaN probabilities).
"""

import time
from typing import Iterator

import torch
import torch.nn.functional as F

from llmlab.checks import (NOT_DONE, CourseError, check_new_tokens, check_number, check_positive_int, check_text,
                           learner_call)
from llmlab.gpt import KVCache


def _check_controls(temperature, top_k, top_p) -> None:
    """The sampling controls: temperature >= 0 (0 is greedy), top_k None or >= 1, top_p None or in (0, 1]."""
    check_number("temperature", temperature, minimum=0)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if top_p is not None:
        check_number("top_p", top_p, minimum=0, strict_minimum=True, maximum=1)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits divided by the temperature (> 0). Temperature 0 is greedy decoding, handled by the caller."""
    check_number("temperature", temperature, minimum=0, strict_minimum=True)
    if temperature < 1e-30:  # float32 would round it to 0 (and 0 / 0 is NaN): divide in float64
        return (logits.double() / temperature).to(logits.dtype)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Logits with all but the k largest set to -inf (ties with the k-th largest are kept). None keeps all."""
    if k is None:
        return logits
    k = check_positive_int("top_k", k)
    if k >= logits.size(-1):
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Logits outside the nucleus set to -inf: the smallest set of most likely tokens with probability >= p.

    The most likely token is always kept, so p close to 0 is greedy and p = 1 (or None) keeps everything.
    """
    if p is None:
        return logits
    if check_number("top_p", p, minimum=0, strict_minimum=True, maximum=1) == 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = F.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens ahead of each one
    drop_sorted = mass_before >= p  # the set already reached p without this token
    drop_sorted[..., 0] = False  # the most likely token stays, even for a p that float32 rounds to 0
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                            top_p: float | None = None) -> torch.Tensor:
    """Probabilities of the next token after temperature, then top-k, then top-p (the order most libraries use).

    Temperature 0 puts all the probability on the most likely token (greedy).
    """
    _check_controls(temperature, top_k, top_p)
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.size(-1)).to(torch.float32)
    logits = logits.float()
    # minus the largest logit first: the same softmax, and a tiny temperature gives -inf, never inf - inf = NaN
    logits = apply_temperature(logits - logits.max(dim=-1, keepdim=True).values, temperature)
    logits = top_p_filter(top_k_filter(logits, top_k), top_p)
    return F.softmax(logits, dim=-1)


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of logits (..., vocab), drawn after the controls reshape the distribution."""
    _check_controls(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)  # greedy: no randomness at all
    probs = next_token_distribution(logits, temperature, top_k, top_p)
    flat = probs.reshape(-1, probs.size(-1))
    drawn = torch.multinomial(flat, 1, generator=generator)
    return drawn.reshape(probs.shape[:-1])


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def stream_tokens(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, stop_tokens=(), use_cache: bool = True,
                  generator: torch.Generator | None = None) -> Iterator[int]:
    """Yield the new token ids one at a time, as a chat interface streams them (arguments as in `generate`)."""
    max_new_tokens = check_new_tokens("max_new_tokens", max_new_tokens)
    _check_controls(temperature, top_k, top_p)
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long:
        raise CourseError(f"idx must be a tensor of token ids (torch.long), not {type(idx).__name__} {idx!r:.60}; "
                          "e.g. torch.tensor([ids])")
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.dim() != 2 or idx.size(0) != 1:
        raise ValueError(f"generate takes one sequence of token ids, shape (1, T), not {tuple(idx.shape)}")
    if idx.size(1) == 0:
        raise ValueError("the prompt is empty: give at least one token (for example the end-of-text token)")
    vocab_size = model.config.vocab_size
    if idx.min() < 0 or idx.max() >= vocab_size:
        raise CourseError(f"idx holds token ids outside the vocabulary 0 .. {vocab_size - 1}: "
                          f"{idx.min().item()} .. {idx.max().item()}")
    stop = set(int(t) for t in stop_tokens)
    block_size = model.config.block_size
    was_training = model.training
    model.eval()  # no dropout while generating
    try:
        idx = idx.to(_model_device(model))
        cache = KVCache() if use_cache else None
        fed = 0  # how many tokens of idx the cache holds
        for _ in range(max_new_tokens):
            if cache is not None and idx.size(1) <= block_size:
                logits, _ = model(idx[:, fed:], cache=cache)  # only the tokens the cache has not seen
                fed = idx.size(1)
            else:  # no cache, or the window has slid: recompute on the last block_size tokens
                logits, _ = model(idx[:, -block_size:])
            next_id = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
            idx = torch.cat([idx, next_id.view(1, 1)], dim=1)
            yield int(next_id)
            if int(next_id) in stop:
                return
    finally:
        model.train(was_training)


def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, stop_tokens=(), use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue the token ids idx, shape (1, T), by up to max_new_tokens tokens.

    Returns the FULL sequence, prompt included, shape (1, T + n) with n <= max_new_tokens (nanoGPT's
    convention); the new tokens are `out[:, idx.size(1):]`. Generation stops early after the first token in
    stop_tokens, which is kept as the last token of the output so the caller can see why it stopped.
    temperature=0 is greedy decoding. generator (a torch.Generator on the model's device) makes sampling
    repeatable.

    use_cache=True feeds the model only the newest token and reuses the cached keys and values of the others.
    Once the sequence outgrows the context window (block_size) the window slides; every token's learned
    position then changes, so no cached key is valid any more and each step recomputes the last block_size
    tokens, exactly what use_cache=False does.
    """
    new = list(stream_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, stop_tokens, use_cache,
                             generator))
    idx = idx.unsqueeze(0) if idx.dim() == 1 else idx
    return torch.cat([idx, torch.tensor([new], dtype=torch.long, device=idx.device)], dim=1)


def _encode(tokenizer, text: str) -> list[int]:
    """Token ids from a `transformers` tokenizer or a `tokenizers.Tokenizer`, with no special tokens added."""
    encoded = tokenizer.encode(text, add_special_tokens=False)
    return encoded.ids if hasattr(encoded, "ids") else list(encoded)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 50, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, stop_tokens=(), use_cache: bool = True,
                  generator: torch.Generator | None = None) -> str:
    """The text the model writes after prompt (the continuation only, without the prompt or a stop token).

    An empty prompt starts from the end-of-text token, so a base model "dreams" a new document.
    """
    check_text("prompt", prompt, allow_empty=True)
    max_new_tokens = check_new_tokens("max_new_tokens", max_new_tokens)
    ids = _encode(tokenizer, prompt)
    if not ids:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("the prompt is empty and the tokenizer has no end-of-text token to start from")
        ids = [eos]
    idx = torch.tensor([ids], dtype=torch.long)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   stop_tokens=stop_tokens, use_cache=use_cache, generator=generator)
    new = out[0, len(ids):].tolist()
    if new and new[-1] in set(int(t) for t in stop_tokens):
        new = new[:-1]
    return tokenizer.decode(new)


@torch.inference_mode()
def generate_batch(model, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None, stop_tokens=(),
                   generator: torch.Generator | None = None) -> list[list[int]]:
    """Continue many prompts at once: each row's new token ids (a stop token ends a row and is left out).

    What RL and evaluation need: hundreds of answers. The prompts (lists of token ids, any lengths) are padded
    on the LEFT to one length, so every row's next token sits in the same, last column; the model is told the
    padding (`pad_lengths`), so each row gets exactly the logits it would get alone. One KV cache serves the
    whole batch, and rows that have finished are dropped from it, so the batch shrinks as answers end.
    A row also ends when it fills the context window (block_size tokens).
    """
    check_positive_int("max_new_tokens", max_new_tokens, maximum=10_000)
    if not prompts or any(not isinstance(p, (list, tuple)) or len(p) == 0 for p in prompts):
        raise CourseError("generate_batch needs a non-empty list of prompts, each a non-empty list of token ids")
    block_size = model.config.block_size
    longest = max(len(p) for p in prompts)
    if longest >= block_size:
        raise CourseError(f"a prompt has {longest} tokens; the context window holds {block_size}, with room "
                          "for at least one new token: shorten the prompt")
    stop = set(int(t) for t in stop_tokens)
    device = _model_device(model)
    pad = torch.tensor([longest - len(p) for p in prompts], device=device)
    idx = torch.tensor([[0] * (longest - len(p)) + list(p) for p in prompts], device=device)
    was_training = model.training
    model.eval()
    try:
        cache = KVCache()
        logits, _ = model(idx, cache=cache, pad_lengths=pad)
        rows = list(range(len(prompts)))  # the original index of each row still in the batch
        new: list[list[int]] = [[] for _ in prompts]
        for step in range(min(max_new_tokens, block_size - longest)):
            next_ids = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
            keep = []
            for position, (row, token) in enumerate(zip(rows, next_ids.tolist())):
                if token in stop:
                    continue
                new[row].append(token)
                keep.append(position)
            if not keep or step == min(max_new_tokens, block_size - longest) - 1:
                break
            if len(keep) < len(rows):  # drop finished rows from the batch and from the cache
                kept = torch.tensor(keep, device=device)
                cache.keys = [k.index_select(0, kept) for k in cache.keys]
                cache.values = [v.index_select(0, kept) for v in cache.values]
                pad, next_ids = pad[kept], next_ids[kept]
                rows = [rows[i] for i in keep]
            logits, _ = model(next_ids.view(-1, 1), cache=cache, pad_lengths=pad)
        return new
    finally:
        model.train(was_training)


def repeated_ngram_fraction(ids, n: int = 4) -> float:
    """Share of the n-grams of ids that already occurred earlier in ids: 0 for fresh text, near 1 for a loop."""
    check_positive_int("n", n)
    ids = list(ids)
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


# --- timing -----------------------------------------------------------------------------------------------------

def token_latencies(model, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> list[float]:
    """Seconds each new token took, in order, for greedy generation (the first includes reading the prompt)."""
    check_new_tokens("max_new_tokens", max_new_tokens, minimum=1)
    times, last = [], time.perf_counter()
    for _ in stream_tokens(model, idx, max_new_tokens, temperature=0, use_cache=use_cache):
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times


def fastest_latencies(runs: list[list[float]]) -> list[float]:
    """Each token's fastest time over several timed runs of the same generation (lists from `token_latencies`).

    Other programs on the machine only ever slow a step down, never speed it up, so the fastest time seen at
    each position is the closest to what the machine can do (timeit takes the minimum for the same reason).
    """
    return [min(times) for times in zip(*runs)]


def generation_speed(model, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True,
                     repeats: int = 3) -> float:
    """Tokens per second of greedy generation, each token at its fastest over repeats runs."""
    check_positive_int("repeats", repeats, maximum=100)
    fastest = fastest_latencies([token_latencies(model, idx, max_new_tokens, use_cache) for _ in range(repeats)])
    return len(fastest) / sum(fastest)


# --- prompting a base model -------------------------------------------------------------------------------------

def few_shot_prompt(examples, query: str, *, instruction: str = "", template: str = "{x} -> {y}") -> str:
    """A prompt of an optional instruction, one line per solved example, then the query left open.

    few_shot_prompt([("cat", "cat")], "dog", template="{x} = {y}") == "cat = cat\\ndog ="
    """
    check_text("query", query, allow_empty=True)
    check_text("instruction", instruction, allow_empty=True)
    try:
        if not isinstance(template, str) or "{x}" not in template or "{y}" not in template:
            raise ValueError
        template.format(x="", y="")
    except (ValueError, KeyError, IndexError):  # other fields, or a lone brace
        raise CourseError(f"template must be text with the fields {{x}} and {{y}} (and no other braces), such as "
                          f"'{{x}} -> {{y}}', not {template!r:.60}") from None
    lines = [instruction] if instruction else []
    lines += [template.format(x=x, y=y) for x, y in examples]
    open_line = template.format(x=query, y="").rstrip()  # the model writes the answer
    return "\n".join([*lines, open_line])


def complete_line(model, tokenizer, prompt: str, max_new_tokens: int = 8) -> str:
    """The model's greedy continuation of prompt, up to the end of the line, stripped."""
    check_text("prompt", prompt)
    text = generate_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=0)
    return text.split("\n")[0].strip()


def _check_shots(pairs, n_shots) -> None:
    """pairs: a non-empty list of (x, y) texts; n_shots: how many of the other pairs fit in each prompt."""
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise CourseError(f"pairs must be a non-empty list of (question, answer) pairs, not {pairs!r:.60}")
    check_positive_int("n_shots", n_shots, minimum=0, maximum=len(pairs) - 1)


def few_shot_accuracy(model, tokenizer, pairs, n_shots: int, *, instruction: str = "",
                      template: str = "{x} -> {y}", max_new_tokens: int = 8, seed: int = 0) -> float:
    """Share of pairs (x, y) answered exactly when the model sees n_shots other solved pairs first.

    The shots for each query are drawn (with the seed) from the other pairs, so no query is in its own prompt.
    """
    import random

    _check_shots(pairs, n_shots)
    rng = random.Random(seed)
    correct = 0
    for i, (x, y) in enumerate(pairs):
        others = [p for j, p in enumerate(pairs) if j != i]
        shots = rng.sample(others, n_shots)
        prompt = few_shot_prompt(shots, x, instruction=instruction, template=template)
        correct += complete_line(model, tokenizer, prompt, max_new_tokens) == y
    return correct / len(pairs)


def continuation_logprob(model, tokenizer, prompt: str, continuation: str) -> float:
    """log P(continuation | prompt): the sum of the log-probabilities of the continuation's tokens.

    How evaluation harnesses score a small model on a multiple-choice question: no text is generated, each
    candidate answer is scored, and the most likely one is the model's choice.
    """
    check_text("prompt", prompt, allow_empty=True)
    check_text("continuation", continuation, allow_empty=True)
    context, answer = _encode(tokenizer, prompt), _encode(tokenizer, continuation)
    if not context:  # the first token needs something to be predicted from: the end-of-text token, as in generate_text
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise CourseError("prompt is empty and the tokenizer has no end-of-text token to start from")
        context = [eos]
    if not answer:
        raise CourseError("continuation is empty: give the text whose probability to score")
    if len(answer) > model.config.block_size:
        raise CourseError(f"continuation is {len(answer)} tokens; the model reads at most {model.config.block_size}")
    ids = (context + answer)[-(model.config.block_size + 1):]
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]], device=_model_device(model)))
    logprobs = F.log_softmax(logits[0, -len(answer):].float(), dim=-1)
    return logprobs.gather(-1, torch.tensor(answer, device=logprobs.device)[:, None]).sum().item()


def few_shot_choice_accuracy(model, tokenizer, pairs, n_shots: int, *, n_choices: int = 4, instruction: str = "",
                             template: str = "{x} -> {y}", seed: int = 0) -> float:
    """Share of pairs (x, y) where the right y is the likeliest of n_choices candidates after n_shots examples.

    The wrong candidates are other pairs' answers; chance is 1 / n_choices.
    """
    import random

    _check_shots(pairs, n_shots)
    answers = sorted({y for _, y in pairs})
    check_positive_int("n_choices", n_choices, minimum=2, maximum=len(answers))
    rng = random.Random(seed)
    correct = 0
    for i, (x, y) in enumerate(pairs):
        shots = rng.sample([p for j, p in enumerate(pairs) if j != i], n_shots)
        prompt = few_shot_prompt(shots, x, instruction=instruction, template=template)
        candidates = [y] + rng.sample([a for a in answers if a != y], n_choices - 1)
        rng.shuffle(candidates)  # so a tie never favours the right answer
        # each candidate is scored as the rest of the query's line, e.g. " lamp" after "lamp ->"
        line = template.format(x=x, y="").rstrip()
        scores = [continuation_logprob(model, tokenizer, prompt, template.format(x=x, y=c)[len(line):])
                  for c in candidates]
        correct += candidates[max(range(n_choices), key=scores.__getitem__)] == y
    return correct / len(pairs)


def repeated_sequence_loss(model, length: int = 50, batch: int = 8, seed: int = 0) -> tuple[float, float]:
    """Mean loss (nats/token) on random tokens, then on the same tokens repeated: (first pass, repeat).

    A model that can copy from its context (it has "induction heads") predicts the repeat almost perfectly,
    so its second number is far below the first. Few-shot prompting leans on exactly that ability.
    """
    check_positive_int("length", length, minimum=2, maximum=(model.config.block_size + 1) // 2)
    check_positive_int("batch", batch, maximum=1024)
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    seq = torch.randint(vocab // 10, vocab, (batch, length), generator=g)  # skip the special, byte-level ids
    ids = torch.cat([seq, seq], dim=1)[:, :model.config.block_size + 1].to(_model_device(model))
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    losses = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").mean(dim=0)
    half = length - 1  # predictions of the first pass's tokens 2..length; the rest predict the repeat
    return losses[:half].mean().item(), losses[half + 1:].mean().item()


# --- exercise checkers ------------------------------------------------------------------------------------------

def _check(fn, cases, name: str, hint: str) -> bool:
    """Run fn on each (args, expected) case; print ✓ or what went wrong, never raise."""
    for args, expected in cases:
        got = learner_call(fn, *args, name=name, not_done=f"Not done yet: {hint}")
        if got is NOT_DONE:
            return False
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            print(f"✗ {name} should return a tensor of shape {tuple(expected.shape)}, got {got!r:.80}")
            return False
        if torch.isnan(got).any() or torch.isposinf(got).any():  # NaN would slip through the checks below
            print(f"✗ {name} returns NaN or +inf logits: a dropped token's logit is -inf, a kept one unchanged")
            return False
        if not torch.equal(torch.isfinite(got), torch.isfinite(expected)):
            kept, should = torch.isfinite(got).sum().item(), torch.isfinite(expected).sum().item()
            print(f"✗ {name}{tuple(a if not isinstance(a, torch.Tensor) else 'logits' for a in args)} "
                  f"keeps {kept} tokens; it should keep {should}")
            return False
        if not torch.allclose(got[torch.isfinite(got)], expected[torch.isfinite(expected)]):
            print(f"✗ {name} keeps the right tokens but changes their logits")
            return False
    print(f"✓ {name} matches the reference on {len(cases)} cases")
    return True


def check_min_p(fn) -> bool:
    """Exercise: fn(logits, min_p) keeps the tokens whose probability is at least min_p x the top probability.

    Checked against `transformers`' MinPLogitsWarper.
    """
    from transformers.generation.logits_process import MinPLogitsWarper

    g = torch.Generator().manual_seed(7)
    cases = []
    for min_p in (0.05, 0.2, 0.5, 0.9):
        logits = torch.randn(1, 40, generator=g) * 2.5
        expected = MinPLogitsWarper(min_p=min_p)(None, logits.clone())
        cases.append(((logits.clone(), min_p), expected))
    return _check(fn, cases, "min_p_filter", "compute softmax probabilities, compare each with min_p * the "
                  "largest, and set the logits of the tokens below it to -inf (masked_fill).")


def check_repetition_penalty(fn) -> bool:
    """Exercise: fn(logits, previous_ids, penalty) makes every token already generated less likely.

    Checked against `transformers`' RepetitionPenaltyLogitsProcessor (CTRL's rule: divide a positive logit by
    the penalty, multiply a negative one).
    """
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    g = torch.Generator().manual_seed(11)
    cases = []
    for penalty in (1.2, 2.0):
        logits = torch.randn(1, 30, generator=g) * 3
        previous = torch.randint(0, 30, (1, 12), generator=g)
        expected = RepetitionPenaltyLogitsProcessor(penalty=penalty)(previous, logits.clone())
        cases.append(((logits.clone(), previous, penalty), expected))
    for args, expected in cases:  # the same tokens are kept; here the values matter
        got = learner_call(fn, *args, name="repetition_penalty", not_done=(
            "Not done yet: gather the logits of previous_ids, divide the positive ones by the penalty, "
            "multiply the negative ones, and scatter them back."))
        if got is NOT_DONE:
            return False
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            print(f"✗ repetition_penalty should return a tensor of shape {tuple(expected.shape)}")
            return False
        if not torch.allclose(got, expected, atol=1e-6):
            wrong = (~torch.isclose(got, expected, atol=1e-6)).sum().item()
            print(f"✗ {wrong} logits differ from transformers' RepetitionPenaltyLogitsProcessor "
                  f"(penalty {args[2]}): is a negative logit multiplied, a positive one divided?")
            return False
    print(f"✓ repetition_penalty matches transformers on {len(cases)} cases")
    return True
