"""The from-scratch BPE: a hand-checkable example, Unicode round-trips, save/load, and parity with `tokenizers`."""

import random

import pytest
import regex
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmlab import bpe, corpora

SPECIALS = ["<|endoftext|>", "<|user|>"]

def is_valid_unicode(text):  # Rust strings (so `tokenizers`) cannot hold a lone surrogate
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


UNICODE_CASES = [
    "",
    " ",
    "\n\n\t  \r\n",
    "How many 'r's are in the word \"strawberry\"?",
    "Strawberries 🍓🍓 and a family emoji 👨‍👩‍👧 (joined by zero-width joiners)",
    "漢字とひらがな、한국어, ภาษาไทย, العربية, עברית",
    "e\u0301 vs é, a\u0308\u0323 (combining marks), Ｆｕｌｌｗｉｄｔｈ",
    "\x00\x01\x7f control bytes, \ufeff BOM, \u200b zero-width space, \ufffd replacement char",
    "lone surrogate \ud800 and \udfff, and a noncharacter \uffff",
    "\U0010ffff the last code point, \U0001d54a math",
    "'s'll're 123456 3.14 ...!!! ''' can't won't",
    "<|endoftext|> is just text here",
]


def wiki_tokenizer():
    return bpe.train_bpe("aaabdaaabac", vocab_size=259, progress=False)


def test_wikipedia_example_merges_as_on_wikipedia():
    # aa -> Z, then ab -> Y (it ties with Za, and wins as in `tokenizers`), then ZY -> X: "XdXac".
    tokenizer = wiki_tokenizer()
    a, b, c, d = map(ord, "abcd")
    assert list(tokenizer.merges.items()) == [((a, a), 256), ((a, b), 257), ((256, 257), 258)]
    assert tokenizer.encode("aaabdaaabac") == [258, d, 258, a, c]
    assert tokenizer.vocab[258] == b"aaab"
    assert tokenizer.decode([258, d, 258, a, c]) == "aaabdaaabac"


def test_get_stats_and_merge_on_known_values():
    assert bpe.get_stats([1, 1, 1, 2]) == {(1, 1): 2, (1, 2): 1}
    assert bpe.get_stats([1, 2], {(1, 2): 3}, weight=2) == {(1, 2): 5}
    assert bpe.merge([5, 5, 5], (5, 5), 6) == [6, 5]
    assert bpe.merge([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]


def test_exercise_checker_accepts_the_solution_and_hints_otherwise(capsys):
    assert bpe.check_merge(bpe.merge)

    def placeholder(ids, pair, new_id):
        raise NotImplementedError

    assert not bpe.check_merge(placeholder)
    assert "Not done yet" in capsys.readouterr().out
    assert not bpe.check_merge(lambda ids, pair, new_id: [new_id if i == pair[0] else i for i in ids])
    assert "Hint" in capsys.readouterr().out


@pytest.fixture(scope="module")
def small_tokenizer():
    text = corpora.shakespeare()[:60_000]
    return bpe.train_bpe(text, vocab_size=256 + 200 + len(SPECIALS), special_tokens=SPECIALS, progress=False)


@pytest.mark.parametrize("text", UNICODE_CASES)
def test_round_trip_on_unicode(small_tokenizer, text):
    assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


def test_round_trip_on_random_code_points(small_tokenizer):
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(1, 30)))
        assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


def test_decode_of_a_cut_character_shows_a_replacement_not_an_error(small_tokenizer):
    strawberry_bytes = "🍓".encode()
    assert small_tokenizer.decode(list(strawberry_bytes[:2])) == "\ufffd"


def test_special_tokens(small_tokenizer):
    eot = small_tokenizer.special_tokens["<|endoftext|>"]
    assert eot == len(small_tokenizer.vocab) and len(small_tokenizer) == 256 + 200 + 2
    ids = small_tokenizer.encode("The end.<|endoftext|>Once<|user|>")
    assert eot in ids and small_tokenizer.special_tokens["<|user|>"] == ids[-1]
    assert small_tokenizer.decode(ids) == "The end.<|endoftext|>Once<|user|>"
    assert eot not in small_tokenizer.encode("<|endoftext|>", allowed_special=False)


def test_save_load_round_trip(small_tokenizer, tmp_path):
    path = small_tokenizer.save(tmp_path / "bpe.json")
    loaded = bpe.BPETokenizer.load(path)
    assert loaded.merges == small_tokenizer.merges
    assert loaded.special_tokens == small_tokenizer.special_tokens
    assert loaded.vocab == small_tokenizer.vocab
    text = corpora.tinystories()[0]
    assert loaded.encode(text) == small_tokenizer.encode(text)


def test_clear_errors_on_bad_input(small_tokenizer, tmp_path):
    with pytest.raises(TypeError, match="takes a str"):
        small_tokenizer.encode(b"bytes")
    with pytest.raises(KeyError, match="not in this vocabulary"):
        small_tokenizer.decode([10**6])
    with pytest.raises(ValueError, match="at least 256"):
        bpe.train_bpe("abc", vocab_size=100)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a tokenizer saved"):
        bpe.BPETokenizer.load(tmp_path / "other.json")


def test_naive_and_incremental_training_learn_the_same_merges():
    text = corpora.shakespeare()[:8_000]
    fast = bpe.train_bpe(text, vocab_size=256 + 40, progress=False)
    naive = bpe.train_bpe_naive(text, vocab_size=256 + 40, progress=False)
    assert len(fast.merges) == 40 and fast.merges == naive.merges
    assert fast.merge_counts == naive.merge_counts and len(naive.merge_seconds) == 40


# ----------------------------------------------------------------------------------------------------------
# Parity with Hugging Face `tokenizers`


def train_with_tokenizers(texts, vocab_size, special_tokens=()):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def test_pre_split_matches_tokenizers():
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    for text in [*filter(is_valid_unicode, UNICODE_CASES), corpora.tinystories()[3], corpora.shakespeare()[:3000]]:
        theirs = [bpe.bytelevel_to_bytes(piece) for piece, _ in pre.pre_tokenize_str(text)]
        ours = [bpe.text_to_bytes(piece) for piece in regex.findall(bpe.GPT2_SPLIT_PATTERN, text)]
        assert ours == theirs, text


def test_tie_break_matches_tokenizers_on_the_wikipedia_example():
    theirs = train_with_tokenizers(["aaabdaaabac"], vocab_size=259)
    assert bpe.tokenizers_merges(theirs.to_str()) == bpe.merges_as_bytes(wiki_tokenizer())


def test_tie_break_matters_where_bytes_and_tokenizers_order_disagree():
    # "ab" and " c" both occur once; tokenizers ranks "a" before the space, byte values put the space first.
    text = "ab c"
    ours = bpe.train_bpe(text, vocab_size=257, progress=False)
    by_bytes = bpe.train_bpe(text, vocab_size=257, progress=False, tie_break="bytes")
    theirs = train_with_tokenizers([text], vocab_size=257)
    assert bpe.merges_as_bytes(ours) == bpe.tokenizers_merges(theirs.to_str()) == [(b"a", b"b")]
    assert bpe.merges_as_bytes(by_bytes) == [(b" ", b"c")]


@pytest.fixture(scope="module")
def parity_pair():
    stories = corpora.tinystories()
    texts = [*stories[:300], corpora.shakespeare()[:80_000]]
    vocab_size = 256 + len(SPECIALS) + 400
    ours = bpe.train_bpe(texts, vocab_size, special_tokens=SPECIALS, progress=False)
    theirs = train_with_tokenizers(texts, vocab_size, SPECIALS)
    return ours, theirs


def test_parity_same_merges_in_the_same_order(parity_pair):
    ours, theirs = parity_pair
    assert len(ours) == theirs.get_vocab_size() == 256 + 2 + 400
    assert bpe.merges_as_bytes(ours) == bpe.tokenizers_merges(theirs.to_str())


def test_parity_same_token_ids_on_held_out_text(parity_pair):
    ours, theirs = parity_pair
    to_ours = bpe.id_map_from_tokenizers(ours, theirs.get_vocab())
    assert sorted(to_ours.values()) == list(range(len(ours)))  # one-to-one: the same tokens, renumbered
    held_out = [*corpora.tinystories()[-20:], corpora.speeches()[-1].text[:5000], *filter(is_valid_unicode, UNICODE_CASES),
                "The end.<|endoftext|>Once upon a time<|user|>"]
    for text in held_out:
        their_ids = theirs.encode(text).ids
        assert [to_ours[i] for i in their_ids] == ours.encode(text), text
        assert theirs.decode(their_ids, skip_special_tokens=False) == ours.decode(ours.encode(text))
