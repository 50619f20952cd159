"""Bad input, as a careless or curious learner types it (issue 16).

For any input, a public function of llmlab (and the function behind each widget) returns a valid result or
refuses with a readable error (a CourseError, which is a ValueError; a KeyError naming an unknown word): never a
hang, a NaN, a dead kernel (llama.cpp aborts the process) or a changed cache. Property-based tests (hypothesis)
throw arbitrary values at the doors; the explicit tests below them pin each example of the issue.
"""

import json
import math
import os
import tempfile
from pathlib import Path
from unittest import mock

import ipywidgets
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmlab import (artifacts, attention, bigram, bow, bpe, checks, data, embeddings, export, generation,
                    open_models, paths, sequences, sizing, training, widgets)
from llmlab.checks import MAX_NEW_TOKENS, CourseError
from llmlab.gpt import GPT, GPTConfig

# A few dozen examples per property keeps the whole file well under a minute on two cores; a deeper search:
# LLMLAB_PROPERTY_SCALE=20 python -m pytest tests/unit/test_bad_input.py
SCALE = int(os.environ.get("LLMLAB_PROPERTY_SCALE", "1"))
FEW = settings(max_examples=30 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values a learner might type where a number, a size or a text is expected.
BAD_NUMBERS = st.sampled_from([0, -1, -0.5, 0.0, 1e-300, 1e300, float("nan"), float("inf"), float("-inf"), True,
                               None, "3", "", [2], 10**9, 10_001, 2.5])
ANYTHING = st.one_of(BAD_NUMBERS, st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
SMALL_COUNT = st.one_of(st.integers(-3, 12), BAD_NUMBERS)  # valid ones stay small, so a call stays fast
TEXT = st.one_of(st.text(max_size=40), st.none(), st.integers(), st.sampled_from(["", " ", "\n", "ROMEO:", "🍓"]))


def refused_or(call, check=lambda result: None, also=()):
    """Run call(); a CourseError/ValueError (or an `also` error) is a fine refusal, anything else a failure;
    a result must pass check."""
    try:
        result = call()
    except (ValueError, *also) as error:
        assert str(error).strip(), "a refusal must say why"
        return None
    check(result)
    return result


# --- fixtures: tiny models, so each call takes milliseconds ---------------------------------------------------

TEXT_SAMPLE = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"


@pytest.fixture(scope="module")
def tokenizer():
    from llmlab.tokenizer import as_transformers, train_bytelevel_bpe

    return as_transformers(train_bytelevel_bpe([TEXT_SAMPLE * 20], vocab_size=300))


@pytest.fixture(scope="module")
def gpt(tokenizer):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(tokenizer), block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()


@pytest.fixture(scope="module")
def char_models():
    model = bigram.CharBigram(TEXT_SAMPLE)
    torch.manual_seed(0)
    lm = sequences.CharLM(len(model.vocab), hidden_size=8, kind="lstm", embed_size=8)
    return model, lm


@pytest.fixture(scope="module")
def gguf_file(gpt, tokenizer, tmp_path_factory):
    return export.export_gguf(gpt, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def llm(gguf_file):
    model = export.load_gguf(gguf_file, n_threads=1)
    yield model
    model.close()


def is_distribution(probs):
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-4)


# --- properties: sampling and generation ------------------------------------------------------------------------

@SOME
@given(temperature=ANYTHING, top_k=st.one_of(st.none(), ANYTHING), top_p=st.one_of(st.none(), ANYTHING),
       logits=st.lists(st.floats(-1e4, 1e4), min_size=2, max_size=8))
def test_sampling_controls_give_a_distribution_or_a_refusal(temperature, top_k, top_p, logits):
    logits = torch.tensor([logits])
    refused_or(lambda: generation.next_token_distribution(logits, temperature, top_k, top_p), is_distribution)

    def valid_id(ids):
        assert 0 <= int(ids) < logits.size(-1)

    refused_or(lambda: generation.sample_next_token(logits, temperature, top_k, top_p), valid_id)
    refused_or(lambda: is_distribution(torch.softmax(generation.top_k_filter(logits, top_k), -1)))
    refused_or(lambda: is_distribution(torch.softmax(generation.top_p_filter(logits, top_p), -1)))
    refused_or(lambda: generation.apply_temperature(logits, temperature),
               lambda out: not out.isnan().any() or pytest.fail(f"temperature {temperature} gave {out}"))


@FEW
@given(max_new_tokens=SMALL_COUNT, temperature=st.one_of(st.sampled_from([0, 0.7, 1.0]), BAD_NUMBERS),
       prompt=st.one_of(st.lists(st.integers(-2, 400), max_size=30), st.none(), st.text(max_size=3)))
def test_generate_returns_the_prompt_and_at_most_max_new_tokens(gpt, max_new_tokens, temperature, prompt):
    def call():
        idx = torch.tensor([prompt], dtype=torch.long) if isinstance(prompt, list) else prompt
        return generation.generate(gpt, idx, max_new_tokens, temperature=temperature)

    def check(out):
        assert out.shape[0] == 1 and len(prompt) <= out.shape[1] <= len(prompt) + max_new_tokens
        assert out[0, :len(prompt)].tolist() == prompt and 0 <= out.min() and out.max() < gpt.config.vocab_size

    refused_or(call, check)


@FEW
@given(prompt=TEXT, max_new_tokens=SMALL_COUNT, top_k=st.one_of(st.none(), SMALL_COUNT))
def test_generate_text_writes_text_or_refuses(gpt, tokenizer, prompt, max_new_tokens, top_k):
    refused_or(lambda: generation.generate_text(gpt, tokenizer, prompt, max_new_tokens, top_k=top_k),
               lambda text: isinstance(text, str) or pytest.fail(repr(text)))


@FEW
@given(prompt=TEXT, continuation=TEXT)
def test_continuation_logprob_is_a_log_probability(gpt, tokenizer, prompt, continuation):
    refused_or(lambda: generation.continuation_logprob(gpt, tokenizer, prompt, continuation),
               lambda lp: (math.isfinite(lp) and lp <= 0) or pytest.fail(str(lp)))


@FEW
@given(query=TEXT, template=st.one_of(st.just("{x} -> {y}"), TEXT), n=SMALL_COUNT)
def test_prompting_helpers(query, template, n):
    refused_or(lambda: generation.few_shot_prompt([("cat", "cat")], query, template=template),
               lambda text: isinstance(text, str) or pytest.fail(repr(text)))
    refused_or(lambda: generation.repeated_ngram_fraction([1, 2, 1, 2, 1], n),
               lambda share: 0 <= share <= 1 or pytest.fail(str(share)))


# --- properties: character models (notebooks 00 and 03) and their widgets -------------------------------------

@SOME
@given(prompt=TEXT, n=SMALL_COUNT, seed=st.one_of(st.integers(0, 5), BAD_NUMBERS))
def test_bigram_widget_completes_or_refuses(char_models, prompt, n, seed):
    model, _ = char_models

    def check(text):
        assert text.startswith(prompt) and len(text) == len(prompt) + n

    refused_or(lambda: model.complete(prompt, n, seed=seed), check)


@SOME
@given(text=TEXT, smoothing=st.one_of(st.floats(0, 5), BAD_NUMBERS), probe=TEXT)
def test_a_bigram_model_of_any_text_has_finite_probabilities(text, smoothing, probe):
    model = refused_or(lambda: bigram.CharBigram(text, smoothing=smoothing))
    if model is None:
        return
    is_distribution(model.probs)
    refused_or(lambda: model.nll(probe), lambda nll: not math.isnan(nll) or pytest.fail(f"nll({probe!r}) is NaN"))
    refused_or(lambda: model.next_char_probs(probe), lambda probs: math.isclose(sum(probs.values()), 1, rel_tol=1e-4))


@SOME
@given(vocab_size=SMALL_COUNT, hidden_size=SMALL_COUNT, kind=st.one_of(st.sampled_from(["rnn", "lstm", "gru"]), TEXT))
def test_a_character_lm_is_built_or_refused(vocab_size, hidden_size, kind):
    def check(lm):
        logits, _, _ = lm(torch.zeros(1, 3, dtype=torch.long))
        assert logits.shape == (1, 3, vocab_size) and torch.isfinite(logits).all()

    refused_or(lambda: sequences.CharLM(vocab_size, hidden_size, kind=kind, embed_size=4), check)


@FEW
@given(prefix=TEXT, length=SMALL_COUNT, temperature=st.one_of(st.sampled_from([0, 1e-30, 0.8, 50]), BAD_NUMBERS))
def test_character_lm_sampler_writes_length_characters_or_refuses(char_models, prefix, length, temperature):
    model, lm = char_models
    refused_or(lambda: sequences.sample(lm, model.vocab, prefix, length=length, temperature=temperature),
               lambda text: len(text) == length or pytest.fail(repr(text)))
    refused_or(lambda: sequences.surprisal(lm, model.vocab, prefix),
               lambda rows: all(math.isfinite(nll) for _, nll in rows) or pytest.fail(str(rows)))


# --- properties: data, training configuration ------------------------------------------------------------------

@SOME
@given(n_tokens=st.integers(0, 40), block_size=SMALL_COUNT, batch_size=SMALL_COUNT)
def test_batches_come_at_once_or_are_refused_at_the_call(n_tokens, block_size, batch_size):
    stream = torch.arange(n_tokens)

    def first_batches():
        stream_of_batches = data.batches(stream, block_size, batch_size, pad_id=0)
        return [next(stream_of_batches) for _ in range(3)]  # three: the second pass cuts at an offset

    def check(batches):
        for inputs, targets in batches:
            assert inputs.shape == targets.shape == (batch_size, block_size)

    refused_or(first_batches, check)


TRAIN_FIELDS = dict(max_steps=SMALL_COUNT, batch_size=SMALL_COUNT, learning_rate=ANYTHING, min_lr=ANYTHING,
                    warmup_steps=SMALL_COUNT, betas=st.one_of(st.tuples(ANYTHING, ANYTHING), ANYTHING),
                    weight_decay=ANYTHING, grad_clip=st.one_of(st.none(), ANYTHING), eval_interval=SMALL_COUNT,
                    eval_rows=st.one_of(st.none(), SMALL_COUNT), bfloat16=ANYTHING, compile=ANYTHING)


@SOME
@given(settings_=st.fixed_dictionaries({}, optional=TRAIN_FIELDS))
def test_train_config_refuses_what_would_train_silently_wrong(settings_):
    settings_ = {"max_steps": 10, "batch_size": 2, **settings_}

    def check(config):
        assert config.max_steps >= 1 and config.batch_size >= 1 and config.eval_interval >= 1
        assert math.isfinite(config.learning_rate) and config.learning_rate > 0
        assert 0 <= config.min_lr <= config.learning_rate and config.weight_decay >= 0
        assert config.grad_clip is None or (math.isfinite(config.grad_clip) and config.grad_clip > 0)
        assert all(0 <= b < 1 for b in config.betas)
        assert isinstance(config.bfloat16, bool) and isinstance(config.compile, bool)

    refused_or(lambda: training.TrainConfig(**settings_), check)


GPT_FIELDS = dict(vocab_size=SMALL_COUNT, block_size=SMALL_COUNT, n_layer=SMALL_COUNT, n_head=SMALL_COUNT,
                  n_embd=st.one_of(SMALL_COUNT, st.just(76_800)), dropout=ANYTHING)


@SOME
@given(fields=st.fixed_dictionaries({}, optional=GPT_FIELDS))
def test_gpt_config_builds_a_model_or_refuses(fields):
    fields = {"vocab_size": 32, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 8, **fields}
    config = refused_or(lambda: GPTConfig(**fields))
    if config is not None and config.n_layer * config.n_embd ** 2 * 12 < 1e6:
        logits, _ = GPT(config)(torch.zeros(1, 1, dtype=torch.long))
        assert logits.shape == (1, 1, config.vocab_size) and torch.isfinite(logits).all()


@SOME
@given(ids=st.one_of(st.lists(st.integers(-3, 320), max_size=20), TEXT))
def test_attention_maps_are_rows_of_weights_or_a_refusal(gpt, ids):
    from llmlab.gpt import attention_maps

    def check(maps):
        assert maps.shape == (1, 2, len(ids), len(ids)) and torch.isfinite(maps).all()
        assert torch.allclose(maps.sum(-1), torch.ones(maps.shape[:-1]), atol=1e-5)

    refused_or(lambda: attention_maps(gpt, torch.tensor(ids, dtype=torch.long) if isinstance(ids, list) else ids),
               check)


SGNS_FIELDS = dict(dim=SMALL_COUNT, window=SMALL_COUNT, negatives=SMALL_COUNT, min_count=SMALL_COUNT,
                   subsample=ANYTHING, noise_power=ANYTHING, epochs=SMALL_COUNT, batch_size=SMALL_COUNT, lr=ANYTHING,
                   corpus_fraction=ANYTHING)


@SOME
@given(fields=st.fixed_dictionaries({}, optional=SGNS_FIELDS))
def test_word2vec_and_doc2vec_configs_are_valid_or_refused(fields):
    def check(config):
        assert config.dim >= 1 and config.epochs >= 1 and config.batch_size >= 1 and config.negatives >= 1
        assert 0 < config.subsample <= 1 and 0 < config.lr and math.isfinite(config.lr)

    refused_or(lambda: embeddings.Word2VecConfig(**fields), check)
    doc_fields = {k: v for k, v in fields.items() if k in ("dim", "negatives", "subsample", "epochs", "batch_size",
                                                           "lr")}
    refused_or(lambda: embeddings.Doc2VecConfig(**doc_fields), check)


# --- properties: the artifact cache ------------------------------------------------------------------------------

@SOME
@given(name=st.one_of(TEXT, st.sampled_from(["", ".", "..", "../fast", "a/b", "base/..", "/tmp", "~", "Base",
                                             "base", "sft-persona", "x" * 101])))
def test_no_artifact_name_reaches_outside_its_own_folder(name):
    with tempfile.TemporaryDirectory() as root, mock.patch.object(paths, "CACHE_DIR", Path(root) / "cache"):
        other = artifacts.cached("other", build=lambda f: (f / "x.txt").write_text("x"),
                                 load=lambda f: (f / "x.txt").read_text(), config={})
        before = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))

        def build(folder):
            (folder / "x.txt").write_text("new")

        result = refused_or(lambda: artifacts.cached(name, build=build, load=lambda f: (f / "x.txt").read_text(),
                                                     config={}))
        after = sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))
        assert other == "x" and (Path(root) / "cache").exists()
        if result is None:
            assert after == before  # a refused name touched nothing
        else:
            assert artifacts.NAME_PATTERN.fullmatch(name) and result == ("x" if name == "other" else "new")
            assert set(before) <= set(after)  # the new entry is added, nothing else removed


# --- properties: the other doors of notebooks 00-05 ---------------------------------------------------------------

@SOME
@given(parameters=st.one_of(st.floats(allow_nan=True, allow_infinity=True), BAD_NUMBERS),
       precision=st.one_of(st.sampled_from(list(sizing.BYTES_PER_PARAMETER)), TEXT))
def test_memory_widget_gives_a_finite_size_or_refuses(parameters, precision):
    refused_or(lambda: sizing.memory_gb(parameters, precision),
               lambda gb: (math.isfinite(gb) and gb >= 0) or pytest.fail(str(gb)))
    refused_or(lambda: sizing.training_flops(parameters, 1e9), lambda f: math.isfinite(f) and f >= 0)


@pytest.fixture(scope="module")
def search_index():
    speeches = ["the tariff and the railroads", "war and peace in europe", "taxes, the budget and the deficit"]
    bag = bow.TfidfBag()
    return bag, bag.fit_transform(speeches), ["a", "b", "c"]


@SOME
@given(query=TEXT, k=SMALL_COUNT)
def test_search_widget_finds_or_says_why_not(search_index, query, k):
    bag, index, titles = search_index
    refused_or(lambda: bow.search(query, bag, index, titles, k=k),
               lambda hits: (len(hits) == min(k, 3) and all(0 <= s <= 1 + 1e-9 for _, s in hits))
               or pytest.fail(str(hits)))
    refused_or(lambda: bow.tokenize(query), lambda words: isinstance(words, list))


@pytest.fixture(scope="module")
def word_vectors():
    torch.manual_seed(0)
    words = ["king", "queen", "man", "woman", "berry", "fruit", "strawberry"]
    return embeddings.WordVectors(words, torch.randn(len(words), 4))


@SOME
@given(expression=st.one_of(TEXT, st.sampled_from(["king - man + woman", "- king", "+", "king", "kingg"])),
       k=SMALL_COUNT)
def test_word_explorer_widget_answers_or_says_why_not(word_vectors, expression, k):
    refused_or(lambda: embeddings.explore(word_vectors, expression, k),
               lambda text: isinstance(text, str) or pytest.fail(repr(text)), also=(KeyError,))


@SOME
@given(n=SMALL_COUNT, past=SMALL_COUNT, dim=SMALL_COUNT, rate=ANYTHING,
       tokens=st.one_of(st.lists(st.text(max_size=3), max_size=8), TEXT))
def test_transformer_pieces(n, past, dim, rate, tokens):
    refused_or(lambda: attention.causal_mask(n, past), lambda m: m.shape == (n, n + past))
    refused_or(lambda: attention.sinusoidal_positions(n, dim), lambda t: torch.isfinite(t).all())
    refused_or(lambda: attention.masked_lm(tokens, ["a", "b"], rate), lambda pair: len(pair[0]) == len(tokens))
    refused_or(lambda: attention.span_corruption(tokens, rate), lambda pair: len(pair) == 2)


# --- properties: the widget layer ----------------------------------------------------------------------------------

ERRORS = st.sampled_from([ValueError, KeyError, CourseError, IndexError, TypeError, AttributeError,
                          ZeroDivisionError, RuntimeError, AssertionError, NotImplementedError])


@settings(SOME, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(error=ERRORS, message=st.text(max_size=60).filter(lambda m: "⚠" not in m))
def test_any_error_in_a_widget_callback_is_one_line(capsys, error, message):
    def callback(value):
        if value == "fail":
            raise error(message)
        return value

    box = widgets.text_box("value", "fine")
    with mock.patch.object(widgets, "display"):
        assert widgets.controls(callback, value=box) is None
    capsys.readouterr()
    box.value = "fail"
    out = capsys.readouterr().out
    assert out.count("⚠") == 1 and len(out.split("⚠")[1].strip().splitlines()) <= 1, out
    assert "Traceback" not in out


@SOME
@given(texts=st.one_of(TEXT, st.lists(TEXT, max_size=3)), vocab_size=st.one_of(st.integers(250, 270), BAD_NUMBERS),
       ids=st.one_of(st.lists(st.integers(-3, 300), max_size=5), TEXT))
def test_bpe_trains_and_round_trips_or_refuses(texts, vocab_size, ids):
    tokenizer = refused_or(lambda: bpe.train_bpe(texts, vocab_size, progress=False))
    if tokenizer is None:
        return
    for text in [texts] if isinstance(texts, str) else texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    refused_or(lambda: tokenizer.decode(ids), also=(KeyError,))


@SOME
@given(share=st.one_of(st.floats(0, 1), BAD_NUMBERS), total=SMALL_COUNT, val_fraction=ANYTHING,
       n_documents=st.integers(0, 5))
def test_mixture_and_split_keep_their_promises(share, total, val_fraction, n_documents):
    sources = {"stories": [[1, 2, 3], [4, 5]], "plays": [[6]]}

    def exact_shares(result):
        drawn, table = result
        assert sum(map(len, drawn)) == sum(row.sampled_tokens for row in table)
        assert [row.sampled_tokens for row in table] == [round(total * share), round(total * (1 - share))]

    rest = 1 - share if isinstance(share, float) else share
    refused_or(lambda: data.sample_mixture(sources, {"stories": share, "plays": rest}, total), exact_shares)
    documents = list(range(n_documents))
    refused_or(lambda: data.split_documents(documents, val_fraction),
               lambda split: (split[0] and split[1] and sorted(split[0] + split[1]) == documents) or pytest.fail(split))


@SOME
@given(n_chars=st.integers(0, 30), batch_size=SMALL_COUNT, length=SMALL_COUNT, val_fraction=ANYTHING)
def test_character_windows_and_scores(char_models, n_chars, batch_size, length, val_fraction):
    _, lm = char_models
    ids = torch.arange(n_chars) % 5
    refused_or(lambda: sequences.random_windows(ids, batch_size, length),
               lambda xy: xy[0].shape == xy[1].shape == (batch_size, length) or pytest.fail(str(xy)))
    refused_or(lambda: sequences.evaluate(lm, ids, length=length),
               lambda loss: (math.isfinite(loss) and loss > 0) or pytest.fail(str(loss)))
    refused_or(lambda: sequences.split_train_val(ids, val_fraction),
               lambda parts: len(parts[0]) + len(parts[1]) == n_chars or pytest.fail(str(parts)))


@SOME
@given(a=TEXT, b=st.sampled_from(["king", "queen", "kingg", ""]), k=SMALL_COUNT)
def test_word_vector_lookups(word_vectors, a, b, k):
    refused_or(lambda: word_vectors.similarity(a, b), lambda s: -1.0001 <= s <= 1.0001, also=(KeyError,))
    refused_or(lambda: word_vectors.neighbours(a, k), lambda rows: len(rows) <= k, also=(KeyError,))
    refused_or(lambda: word_vectors.analogy("man", "king", a, k), lambda rows: len(rows) <= k, also=(KeyError,))


@FEW
@given(n_shots=SMALL_COUNT, n_choices=SMALL_COUNT, length=SMALL_COUNT, batch=SMALL_COUNT)
def test_prompting_scores_are_shares(gpt, tokenizer, n_shots, n_choices, length, batch):
    pairs = [("cat", "cat"), ("dog", "dog"), ("sun", "sun"), ("red", "red")]
    share = lambda value: (0 <= value <= 1) or pytest.fail(str(value))  # noqa: E731
    refused_or(lambda: generation.few_shot_accuracy(gpt, tokenizer, pairs, n_shots, max_new_tokens=2), share)
    refused_or(lambda: generation.few_shot_choice_accuracy(gpt, tokenizer, pairs, n_shots, n_choices=n_choices),
               share)
    refused_or(lambda: generation.repeated_sequence_loss(gpt, length, batch),
               lambda losses: all(math.isfinite(x) and x > 0 for x in losses) or pytest.fail(str(losses)))
    refused_or(lambda: generation.token_latencies(gpt, torch.tensor([[1, 2]]), length),
               lambda times: len(times) == length and all(t >= 0 for t in times))


@SOME
@given(max_norm=ANYTHING, scale=st.floats(0, 1e6))
def test_clipping_never_flips_or_grows_a_step(max_norm, scale):
    parameter = torch.nn.Parameter(torch.ones(3))
    parameter.grad = torch.tensor([1.0, -2.0, 2.0]) * scale
    before = parameter.grad.clone()

    def check(norm_before):
        assert torch.allclose(norm_before, before.norm())
        assert (parameter.grad * before >= 0).all()  # same direction, never flipped
        assert parameter.grad.norm() <= min(before.norm(), max_norm) * (1 + 1e-5) + 1e-6

    refused_or(lambda: training.clip_gradients([parameter], max_norm), check)


MESSAGE = st.one_of(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "bot", None, 3]),
                                           "content": st.one_of(TEXT, st.sampled_from(["<|end|>", "hi <|user|>"]))}),
                    ANYTHING)


@SOME
@given(messages=st.one_of(st.lists(MESSAGE, max_size=5), ANYTHING), add_generation_prompt=st.booleans())
def test_chat_messages_are_checked_before_they_are_rendered(messages, add_generation_prompt):
    from llmlab import chat

    def check(text):
        assert isinstance(text, str) and all(m["content"] in text for m in messages)

    refused_or(lambda: chat.render(messages, add_generation_prompt=add_generation_prompt), check)


@SOME
@given(rank=SMALL_COUNT, alpha=ANYTHING, targets=st.one_of(st.lists(st.sampled_from(["c_attn", "c_fc", "wte"]),
                                                                    max_size=3), TEXT))
def test_lora_config_is_valid_or_refused(rank, alpha, targets):
    from llmlab import lora

    def check(config):
        assert config.rank >= 1 and math.isfinite(config.scaling) and config.scaling > 0 and config.targets

    refused_or(lambda: lora.LoRAConfig(rank, alpha, targets), check)


# --- properties: exercise checkers -----------------------------------------------------------------------------

CHECKERS = [sizing.check_memory_exercise, training.check_learning_rate, generation.check_min_p,
            generation.check_repetition_penalty, embeddings.check_center_gradient, bpe.check_merge,
            attention.check_prefix_lm_mask, sequences.check_lstm_cell]
LEARNER = st.one_of(ANYTHING.map(lambda value: ("returns", value)), ERRORS.map(lambda error: ("raises", error)),
                    st.just(("returns NaN like its input", None)))


@settings(SOME, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(checker=st.sampled_from(CHECKERS), behaviour=LEARNER)
def test_an_exercise_checker_never_passes_a_wrong_answer_nor_raises(capsys, checker, behaviour):
    kind, value = behaviour

    def learner(*args, **kwargs):
        if kind == "raises":
            raise value("the learner's bug")
        if kind == "returns":
            return value
        first = args[0]
        return torch.full_like(first, float("nan")) if isinstance(first, torch.Tensor) else float("nan")

    capsys.readouterr()
    assert checker(learner) in (False, None)
    out = capsys.readouterr().out
    assert "✓" not in out and out.strip()  # it says what is wrong


# --- properties: llama.cpp, which aborts the process on a bad request -----------------------------------------------

@SOME
@given(prompt=st.one_of(st.lists(st.integers(-5, 320), max_size=20), st.none(), st.text(max_size=3)),
       max_new_tokens=st.one_of(st.integers(-2, 20), BAD_NUMBERS))
def test_llama_cpp_greedy_never_aborts(llm, prompt, max_new_tokens):
    refused_or(lambda: export.greedy_tokens_llama_cpp(llm, prompt, max_new_tokens),
               lambda new: len(new) <= max_new_tokens or pytest.fail(str(new)))


@pytest.fixture(scope="module")
def logits_llm(gguf_file):
    llm = export.load_gguf(gguf_file, logits_all=True, n_threads=1)
    yield llm
    llm.close()


@FEW
@given(ids=st.one_of(st.lists(st.integers(-5, 320), max_size=20), TEXT))
def test_llama_cpp_logits_are_finite_rows_or_a_refusal(logits_llm, ids):
    refused_or(lambda: export.llama_cpp_logits(logits_llm, ids),
               lambda logits: (logits.shape[0] == len(ids) and torch.isfinite(logits).all()) or pytest.fail(ids))


@FEW
@given(question=TEXT, max_tokens=st.one_of(st.integers(-1, 8), BAD_NUMBERS),
       temperature=st.one_of(st.sampled_from([0.0, 0.7]), BAD_NUMBERS), system=st.one_of(st.none(), TEXT))
def test_chat_with_a_gguf_model_answers_or_refuses(chat_llm, question, max_tokens, temperature, system):
    refused_or(lambda: open_models.chat(chat_llm, question, system=system, max_tokens=max_tokens,
                                        temperature=temperature),
               lambda answer: isinstance(answer, str) or pytest.fail(repr(answer)))


@pytest.fixture(scope="module")
def chat_llm(gguf_file):
    llm = open_models.load_gguf_chat(gguf_file, n_ctx=64, n_threads=1)
    yield llm
    llm.close()


# --- the examples of the issue, one by one -------------------------------------------------------------------------

def test_checks_name_the_argument_the_value_and_what_works():
    with pytest.raises(CourseError, match=r"max_new_tokens must be a whole number >= 0 and <= 10,000, not 10+"):
        checks.check_new_tokens("max_new_tokens", 10**9)
    with pytest.raises(CourseError, match="prompt must be text \\(a str\\), not NoneType None"):
        checks.check_text("prompt", None)
    assert checks.check_positive_int("n", torch.tensor(3)) == 3 and MAX_NEW_TOKENS == 10_000
    assert issubclass(CourseError, ValueError)


@pytest.mark.parametrize("name", ["", "..", ".", "a/b", "../fast", "fast/../..", "Base", "x y"])
def test_artifact_names_that_would_delete_other_entries_are_refused(cache_dir, name):
    kept = artifacts.cached("base", build=lambda f: (f / "w").write_text("1"), load=lambda f: "base", config={})
    with pytest.raises(CourseError, match="artifact name"):
        artifacts.cached(name, build=lambda f: None, load=lambda f: None, config={})
    assert kept == "base" and (cache_dir / "fast" / "base" / "w").read_text() == "1"


@pytest.mark.parametrize("manifest", ["[]", "null", '{"files": 3}', '{"files": {"w": 3}}', '"text"', "42",
                                      '{"config": {}}', "\udcff"])
def test_a_manifest_of_the_wrong_shape_is_rebuilt_with_a_message(cache_dir, capsys, manifest):
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "w").write_text("1")

    artifacts.cached("base", build=build, load=lambda f: (f / "w").read_text(), config={})
    (cache_dir / "fast" / "base" / artifacts.MANIFEST).write_text(manifest, errors="surrogateescape")
    capsys.readouterr()
    assert artifacts.cached("base", build=build, load=lambda f: (f / "w").read_text(), config={}) == "1"
    assert len(builds) == 2 and "corrupt" in capsys.readouterr().out
    assert artifacts.cached("base", build=build, load=lambda f: (f / "w").read_text(), config={}) == "1"
    assert len(builds) == 2  # repaired for good


def test_an_artifact_config_must_be_plain_json(cache_dir):
    for config in ({"lr": float("nan")}, {"words": {"a", "b"}}, ["not", "a", "dict"]):
        with pytest.raises(CourseError, match="config"):
            artifacts.cached("base", build=lambda f: None, load=lambda f: None, config=config)


def test_llama_cpp_requests_that_would_abort_are_refused_first(llm, gguf_file):
    prompt = [1, 2, 3]
    assert export.greedy_tokens_llama_cpp(llm, prompt, 0) == []  # 0 new tokens: nothing, not "no limit"
    limit = export.llama_cpp_positions(llm)
    assert limit == 16  # the positions the tiny model learned, though llama.cpp's window is larger
    with pytest.raises(CourseError, match="at most 13 new tokens"):
        export.greedy_tokens_llama_cpp(llm, prompt, 14)
    with pytest.raises(CourseError, match="shorten the prompt"):
        export.greedy_tokens_llama_cpp(llm, list(range(20)), 1)
    with pytest.raises(CourseError, match="outside the vocabulary"):
        export.greedy_tokens_llama_cpp(llm, [10**6], 1)
    with pytest.raises(CourseError, match="empty"):
        export.greedy_tokens_llama_cpp(llm, [], 1)
    assert len(export.greedy_tokens_llama_cpp(llm, prompt, 13)) <= 13
    with pytest.raises(CourseError, match="logits_all=True"):
        export.llama_cpp_logits(llm, prompt)  # loaded without it: llama.cpp would return zeros
    with_logits = export.load_gguf(gguf_file, logits_all=True, n_threads=1)
    try:
        assert export.llama_cpp_logits(with_logits, prompt).abs().sum() > 0
        with pytest.raises(CourseError, match="at most 16"):
            export.llama_cpp_logits(with_logits, list(range(17)))
    finally:
        with_logits.close()


def test_open_models_chat_refuses_what_would_abort(gguf_file):
    llm = open_models.load_gguf_chat(gguf_file, n_ctx=64, n_threads=1)
    try:
        with pytest.raises(CourseError, match="max_tokens must be a whole number >= 1"):
            open_models.chat(llm, "How many r's?", max_tokens=0)
        for question in (None, 3, ""):
            with pytest.raises(CourseError, match="question"):
                open_models.chat(llm, question)
        with pytest.raises(CourseError, match="temperature"):
            open_models.chat(llm, "hi", temperature=float("nan"))
        with pytest.raises(CourseError, match="messages"):
            open_models.chat_prompt(llm, [{"content": "no role"}])
    finally:
        llm.close()


def test_a_file_that_is_not_gguf_gets_a_clear_message(tmp_path, gguf_file):
    text = tmp_path / "model.gguf"
    text.write_text("this is not a model")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(gguf_file.read_bytes()[:100])
    for path, message in [(text, "not a GGUF file"), (tmp_path / "missing.gguf", "is not a file"),
                          (tmp_path, "is not a file"), (truncated, "cannot be read"), (None, "path must be")]:
        for load in (export.gguf_metadata, export.load_gguf, open_models.load_gguf_chat):
            with pytest.raises(CourseError, match=message):
                load(path)


def test_open_model_helpers_check_their_arguments_before_the_model_runs(llm):
    for call, name in [(lambda: open_models.continue_text(None, None), "prompt"),
                       (lambda: open_models.continue_text(None, "hi", max_new_tokens=0), "max_new_tokens"),
                       (lambda: open_models.seq2seq_generate(None, None, ""), "prompt"),
                       (lambda: open_models.find_gguf_chat_model(3), "path"),
                       (lambda: export.llama_cpp_speed(llm, [1], 5, repeats=0), "repeats"),
                       (lambda: export.llama_cpp_speed(llm, [1], 0), "max_new_tokens")]:
        with pytest.raises(CourseError, match=name):
            call()


def test_hangs_are_refused_at_once():
    with pytest.raises(CourseError, match="batch_size must be a whole number >= 1"):
        data.batches(torch.arange(100), 4, -1, pad_id=0)  # refused at the call, not at the first next()
    model = bigram.CharBigram(TEXT_SAMPLE)
    with pytest.raises(CourseError, match="10,000"):
        model.complete("R", 10**9)
    with pytest.raises(CourseError, match="10,000"):
        sequences.sample(sequences.CharLM(len(model.vocab), 8), model.vocab, "R", length=10**9)


def test_generation_refuses_a_billion_tokens_and_nan_controls(gpt, tokenizer):
    idx = torch.tensor([[1, 2]])
    for kwargs, message in [({"max_new_tokens": 10**9}, "10,000"), ({"temperature": float("nan")}, "temperature"),
                            ({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"),
                            ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_p": float("nan")}, "top_p")]:
        arguments = {"max_new_tokens": 3, **kwargs}
        with pytest.raises(CourseError, match=message):
            generation.generate(gpt, idx, **arguments)
        with pytest.raises(CourseError, match=message):
            generation.generate_text(gpt, tokenizer, "Once", **arguments)
    with pytest.raises(CourseError, match="prompt must be text"):
        generation.generate_text(gpt, tokenizer, None)
    # a tiny temperature is greedy, not NaN
    probs = generation.next_token_distribution(torch.tensor([[1.0, 3.0, 2.0]]), temperature=1e-30)
    assert probs.tolist() == [[0.0, 1.0, 0.0]]


def test_a_model_too_big_for_a_laptop_is_refused_before_it_is_allocated():
    with pytest.raises(CourseError, match="billion parameters .* GB in float32"):
        GPTConfig(n_embd=76_800, n_head=12)  # a typo for 768: 850 billion parameters
    with pytest.raises(CourseError, match="multiple of n_head"):
        GPTConfig(n_embd=100, n_head=12)
    with pytest.raises(CourseError, match="block_size"):
        data.cut_rows(torch.arange(10), 10**9)  # would allocate 8 GB of padding
    with pytest.raises(CourseError, match="n_positions"):
        attention.sinusoidal_positions(10**6, 512)


def test_grad_clip_must_be_positive_or_none():
    for grad_clip in (-1.0, 0, 0.0, float("nan"), float("inf"), "1"):
        with pytest.raises(CourseError, match="grad_clip must be a number > 0 .* or None for no clipping"):
            training.TrainConfig(max_steps=1, batch_size=1, grad_clip=grad_clip)
    assert training.TrainConfig(max_steps=1, batch_size=1, grad_clip=None).grad_clip is None
    for field, value in [("learning_rate", float("nan")), ("learning_rate", float("inf")), ("learning_rate", 0),
                         ("max_steps", 0), ("batch_size", -1), ("min_lr", 1.0), ("eval_interval", 0)]:
        with pytest.raises(CourseError, match=field):
            training.TrainConfig(**{"max_steps": 1, "batch_size": 1, field: value})
    with pytest.raises(CourseError, match="max_norm"):
        training.clip_gradients([], -1.0)


def test_a_loss_that_blows_up_stops_training_with_a_message():
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=8))
    stream = torch.randint(0, 32, (400,), generator=torch.Generator().manual_seed(0))
    config = training.TrainConfig(max_steps=50, batch_size=4, learning_rate=1e30, min_lr=0.0, warmup_steps=0,
                                  grad_clip=None, eval_interval=50)
    with pytest.raises(CourseError, match="training loss became .* smaller learning_rate"):
        training.train(model, data.batches(stream, 8, 4, pad_id=0), config, progress=False)


def test_a_character_lm_whose_loss_blows_up_stops_with_a_message(char_models):
    model, _ = char_models
    torch.manual_seed(0)
    lm = sequences.CharLM(len(model.vocab), hidden_size=8, kind="rnn", embed_size=8)
    ids = model.encode(TEXT_SAMPLE * 3)
    with pytest.raises(CourseError, match="training loss became .* smaller learning rate"):
        sequences.train_char_lm(lm, ids, ids, steps=30, batch_size=4, length=16, lr=1e30, eval_every=30)


def test_evaluate_with_nothing_to_score_refuses_instead_of_a_perfect_zero(gpt):
    inputs = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(CourseError, match="nothing to score"):
        training.evaluate(gpt, inputs, torch.full((2, 4), -100))
    with pytest.raises(CourseError, match="nothing to score"):
        training.evaluate(gpt, inputs[:0], inputs[:0])


def test_exercise_checkers_fail_nan_and_none_answers(capsys):
    nan = float("nan")
    assert sizing.check_memory_exercise(lambda parameters, bits: nan) is False
    assert sizing.check_memory_exercise(lambda parameters, bits: None) is False
    assert training.check_learning_rate(lambda step, **kw: nan) is False
    assert training.check_learning_rate(lambda step, **kw: None) is False
    assert generation.check_min_p(lambda logits, min_p: torch.full_like(logits, nan)) is False
    assert generation.check_min_p(lambda logits, min_p: logits.masked_fill(logits < 0, nan)) is False
    assert generation.check_repetition_penalty(lambda logits, previous, penalty: logits * nan) is False
    assert "✓" not in capsys.readouterr().out


def test_text_where_none_or_a_number_came_names_the_argument():
    model = bigram.CharBigram(TEXT_SAMPLE)
    for call, name in [(lambda: bow.tokenize(None), "text"), (lambda: embeddings.words_of(3), "text"),
                       (lambda: embeddings.parse_expression(None), "expression"),
                       (lambda: model.complete(None, 5), "prompt"), (lambda: model.complete("", 5), "prompt"),
                       (lambda: model.nll("R"), "text"), (lambda: sizing.memory_gb(float("nan"), "fp32"),
                                                          "parameters")]:
        with pytest.raises(CourseError, match=name):
            call()
