"""The course tokenizer: the interface every later notebook relies on, and the local-loading code."""

import json

import pytest
from transformers import PreTrainedTokenizerFast

from llmlab import artifacts, bpe, tokenizer
from llmlab.runtime import by_mode


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Built once for this module, into its own empty cache (training takes a few seconds)."""
    from llmlab import paths

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(paths, "CACHE_DIR", tmp_path_factory.mktemp("cache"))
        yield tokenizer.course_tokenizer()


def test_course_tokenizer_interface(course):
    assert isinstance(course, PreTrainedTokenizerFast)
    assert len(course) == by_mode(full=4096, fast=512)
    assert tokenizer.SPECIAL_TOKENS == ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    assert course.convert_tokens_to_ids(tokenizer.SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    assert course.eos_token == course.bos_token == course.pad_token == tokenizer.EOT
    assert course.eos_token_id == course.bos_token_id == course.pad_token_id == 0
    assert set(tokenizer.SPECIAL_TOKENS) <= set(course.all_special_tokens)


def test_course_tokenizer_is_gpt2_style_bytelevel_bpe(course):
    state = json.loads(course.backend_tokenizer.to_str())
    assert state["model"]["type"] == "BPE"
    assert state["pre_tokenizer"]["type"] == "ByteLevel"
    assert state["pre_tokenizer"]["add_prefix_space"] is False and state["pre_tokenizer"]["use_regex"] is True
    assert state["decoder"]["type"] == "ByteLevel"
    assert state["normalizer"] is None
    # All 256 byte tokens are there, so nothing is ever unknown.
    vocab = course.get_vocab()
    assert all(bpe.BYTE_TO_CHAR[byte] in vocab for byte in range(256))


def test_course_tokenizer_round_trips_and_adds_no_tokens_by_itself(course):
    text = "Once upon a time, a strawberry 🍓 said: 漢字!\n\nThe end."
    ids = course.encode(text)
    assert 0 not in ids  # no automatic bos/eos: the data pipeline adds <|endoftext|> where it means it
    assert course.decode(ids) == text
    chat = "<|user|>How many r's?<|end|><|assistant|>"
    ids = course.encode(chat)
    assert ids[0] == 2 and 4 in ids and ids[-1] == 3
    assert course.decode(ids) == chat


def test_course_tokenizer_is_cached(course, capsys):
    capsys.readouterr()
    again = tokenizer.course_tokenizer()
    assert capsys.readouterr().out == ""  # loaded, not rebuilt
    assert again.get_vocab() == course.get_vocab()
    assert (artifacts.entry_dir("tokenizer") / "tokenizer.json").exists()


def test_course_tokenizer_matches_our_bpe_on_its_corpus(course):
    # The from-scratch trainer, on the same corpora and settings, learns exactly the course tokenizer's merges.
    ours = bpe.train_bpe(tokenizer.training_texts(), len(course), tokenizer.SPECIAL_TOKENS, progress=False)
    assert bpe.merges_as_bytes(ours) == bpe.tokenizers_merges(course.backend_tokenizer.to_str())


def test_load_local_tokenizer_on_a_saved_tokenizer(course, tmp_path):
    course.save_pretrained(tmp_path / "saved")
    loaded = tokenizer.load_local_tokenizer(str(tmp_path / "saved"))
    text = "The Megatron transformer reads strawberry as tokens."
    assert loaded is not None and loaded.encode(text) == course.encode(text)
    assert loaded.eos_token == tokenizer.EOT


def test_load_local_tokenizer_says_how_to_get_a_missing_one(tmp_path, capsys):
    assert tokenizer.load_local_tokenizer(str(tmp_path / "no-such-tokenizer")) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "AutoTokenizer.from_pretrained" in out


def test_tokens_html_colours_every_token(course):
    text = "How many r's in strawberry?"
    page = tokenizer.tokens_html(course, text)
    assert page.count("<span") == len(course.encode(text))
    with pytest.raises(ValueError, match="type some text"):
        tokenizer.tokens_html(course, "")


def test_tokens_per_char_counts_the_same_for_every_kind_of_tokenizer(course):
    texts = ["Once upon a time there was a strawberry.", "漢字 🍓"]
    expected = sum(len(course.encode(t)) for t in texts) / sum(len(t) for t in texts)
    assert tokenizer.tokens_per_char(course, texts) == pytest.approx(expected)
    assert tokenizer.tokens_per_char(course.backend_tokenizer, texts) == pytest.approx(expected)
    ours = bpe.train_bpe(texts, 256 + 3, progress=False)
    assert tokenizer.tokens_per_char(ours, texts) == pytest.approx(
        sum(len(ours.encode(t)) for t in texts) / sum(len(t) for t in texts))
