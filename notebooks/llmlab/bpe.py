"""Byte-level BPE from scratch: train, encode, decode, special tokens, save and load.

The recipe is GPT-2's, and it learns the same merges as Hugging Face `tokenizers` on the same text:
1. Split the text into pieces with GPT-2's regex (a word with its leading space, a number, a run of
   punctuation, whitespace), so merges never cross the boundary between a word and what follows it.
2. Turn each piece into its UTF-8 bytes: the 256 byte values are the first 256 tokens, so every string in
   every script can be encoded and nothing is ever unknown.
3. Repeatedly merge the most frequent adjacent pair of tokens into a new token, until the vocabulary is full.

Training counts pairs over the *unique* pieces, weighted by how often each occurs, and after each merge
updates only the pieces that contained the merged pair (`train_bpe`). `train_bpe_naive` recounts the whole
corpus for every merge instead: the same merges, hundreds of times slower. Notebook 04 times both.

Ties between pairs with equal counts are broken the way `tokenizers` breaks them (see `BYTE_RANK`), so the
two learn the same merges in the same order.
"""

import heapq
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import regex

from llmlab.checks import CourseError, check_positive_int, check_text
from llmlab.progress import progress_bar as tqdm  # a widget live, a final text line in saved notebooks

# GPT-2's pre-tokenizer: contractions, a word (letters) with an optional leading space, a number, a run of
# other symbols, then whitespace. `\s+(?!\S)` keeps the last space of a run for the word that follows.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (a space shows as 'Ġ', a newline as 'Ċ').

    Bytes that are printable characters stand for themselves; the others are moved to code points from 256 up.
    `tokenizers` stores byte-level vocabularies in this form, so this is how we read and write theirs.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {char: byte for byte, char in BYTE_TO_CHAR.items()}

# `tokenizers` numbers the 256 byte tokens in the order of their stand-in characters (all printable ASCII
# first), then every new token in the order it was made. Among pairs with equal counts it merges the pair
# whose (left, right) numbers are smallest. We number bytes by their value, so for ties we use its order.
BYTE_RANK = {byte: rank for rank, byte in enumerate(sorted(BYTE_TO_CHAR, key=BYTE_TO_CHAR.get))}


def bytelevel_to_bytes(token: str) -> bytes:
    """The bytes behind a `tokenizers` byte-level token string ('Ġstraw' -> b' straw')."""
    return bytes(CHAR_TO_BYTE[char] for char in token)


def bytes_to_bytelevel(data: bytes) -> str:
    return "".join(BYTE_TO_CHAR[byte] for byte in data)


def text_to_bytes(text: str) -> bytes:
    # surrogatepass: even a string holding a lone surrogate (not valid Unicode text) encodes, and round-trips.
    return text.encode("utf-8", errors="surrogatepass")


def bytes_to_text(data: bytes) -> str:
    try:
        return data.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError:  # ids that cut a character in two: show the broken part as U+FFFD
        return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------------------
# The two operations BPE is made of


def get_stats(ids: list[int], counts: dict | None = None, weight: int = 1) -> dict:
    """How often each adjacent pair occurs in ids (added into counts, each occurrence counting `weight`).

    Overlapping pairs all count: "aaa" holds the pair (a, a) twice, as in `tokenizers`.
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of pair in ids by new_id, left to right ("aaa" with (a, a) -> [aa, a])."""
    merged, i = [], 0
    first, second = pair
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == first and ids[i + 1] == second:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


# ---------------------------------------------------------------------------------------------------------
# The tokenizer


NOT_A_MERGE = float("inf")


class BPETokenizer:
    """A byte-level BPE tokenizer: 256 byte tokens, the learned merges, then the special tokens.

    merges: (left id, right id, new id) in the order they were learned (the order encode applies them).
    A tokenizer fresh from training also has `merge_counts`: how often each merged pair occurred then.
    """

    def __init__(self, merges=(), special_tokens=(), pattern: str = GPT2_SPLIT_PATTERN):
        self.pattern = pattern
        self._split = regex.compile(pattern)
        self.vocab: dict[int, bytes] = {byte: bytes([byte]) for byte in range(256)}
        self.merges: dict[tuple[int, int], int] = {}
        for left, right, new_id in merges:
            self.merges[(left, right)] = new_id
            self.vocab[new_id] = self.vocab[left] + self.vocab[right]
        first_special = max(self.vocab) + 1
        self.special_tokens = {token: first_special + i for i, token in enumerate(special_tokens)}
        self._id_of_bytes = {data: token_id for token_id, data in self.vocab.items()}
        self._special_names = {token_id: name for name, token_id in self.special_tokens.items()}
        self._rank = {pair: rank for rank, pair in enumerate(self.merges)}  # learned first = applied first
        # Longest first, so a special token that starts another one never cuts it short.
        names = sorted(self.special_tokens, key=len, reverse=True)
        self._special_split = regex.compile("(" + "|".join(regex.escape(n) for n in names) + ")") if names else None
        self._cache: dict[str, list[int]] = {}

    def __len__(self) -> int:
        """The vocabulary size: bytes, merged tokens and special tokens."""
        return len(self.vocab) + len(self.special_tokens)

    def __repr__(self) -> str:
        return (f"BPETokenizer({len(self)} tokens: 256 bytes + {len(self.vocab) - 256} merged + "
                f"{len(self.special_tokens)} special)")

    # -- encoding ---------------------------------------------------------------------------------------
    def _encode_piece(self, piece: str) -> list[int]:
        """Apply the merges to one pre-split piece, earliest-learned first, as they were learned."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = list(text_to_bytes(piece))
        while len(ids) >= 2:
            pairs = set(zip(ids, ids[1:]))
            # Of the pairs present, the one learned first.
            pair = min(pairs, key=lambda p: self._rank.get(p, NOT_A_MERGE))
            if pair not in self.merges:
                break
            ids = merge(ids, pair, self.merges[pair])
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, reading special-token strings in it as ordinary text."""
        ids = []
        for piece in self._split.findall(text):
            ids.extend(self._encode_piece(piece))
        return ids

    def encode(self, text: str, allowed_special: bool = True) -> list[int]:
        """Encode text; a special token written in the text becomes its id (as `tokenizers` does),
        unless allowed_special=False."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        if not allowed_special or self._special_split is None:
            return self.encode_ordinary(text)
        ids = []
        for part in self._special_split.split(text):
            if part in self.special_tokens:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    # -- decoding ---------------------------------------------------------------------------------------
    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self.vocab:
            return self.vocab[token_id]
        if token_id in self._special_names:
            return self._special_names[token_id].encode("utf-8")
        raise KeyError(f"token id {token_id} is not in this vocabulary of {len(self)} tokens (0..{len(self) - 1})")

    def decode(self, ids: Iterable[int]) -> str:
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise CourseError(f"ids must be a list of token ids, not {type(ids).__name__} {ids!r:.60}")
        return bytes_to_text(b"".join(self.token_bytes(i) for i in ids))

    def id_of(self, token: bytes | str) -> int:
        """The id of a token given as its bytes, or a special token given as its name."""
        if isinstance(token, str):
            return self.special_tokens[token]
        return self._id_of_bytes[token]

    # -- saving -----------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the tokenizer to a JSON file: its split pattern, merges (in order) and special tokens."""
        path = Path(path)
        state = {
            "format": "llmlab-bpe/1",
            "pattern": self.pattern,
            "merges": [[left, right, new_id] for (left, right), new_id in self.merges.items()],
            "special_tokens": list(self.special_tokens),
        }
        path.write_text(json.dumps(state, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        state = json.loads(Path(path).read_text())
        if state.get("format") != "llmlab-bpe/1":
            raise ValueError(f"{path} is not a tokenizer saved by BPETokenizer.save")
        return cls([tuple(m) for m in state["merges"]], state["special_tokens"], state["pattern"])


# ---------------------------------------------------------------------------------------------------------
# Training


def count_pieces(texts: str | Iterable[str], pattern: str = GPT2_SPLIT_PATTERN) -> Counter:
    """How often each pre-split piece occurs ("Ġthe" thousands of times): BPE only needs these counts."""
    split = regex.compile(pattern)
    counts = Counter()
    if not isinstance(texts, (str, list, tuple)):
        raise CourseError(f"texts must be a str or a list of str, not {type(texts).__name__} {texts!r:.60}")
    for text in [texts] if isinstance(texts, str) else texts:
        counts.update(split.findall(check_text("each of texts", text, allow_empty=True)))
    return counts


# Among pairs with equal counts, merge the one whose (left, right) tokens rank first: "tokenizers" ranks bytes as
# `tokenizers` does (BYTE_RANK), "bytes" by byte value. New tokens rank after all bytes, in the order made.
TIE_BREAKS = ("tokenizers", "bytes")


class _Vocabulary:
    """Token bytes while training, with the tie-break rank of each token and the reuse rule of `tokenizers`."""

    def __init__(self, vocab_size: int, n_special: int, tie_break: str):
        if check_positive_int("vocab_size", vocab_size, maximum=1_000_000) < 256 + n_special:
            raise CourseError(f"vocab_size must be at least 256 bytes + {n_special} special tokens, not {vocab_size}")
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {TIE_BREAKS}, not {tie_break!r}")
        self.limit = vocab_size - n_special
        self.bytes = {byte: bytes([byte]) for byte in range(256)}
        self.id_of = {data: token_id for token_id, data in self.bytes.items()}
        self.rank = dict(BYTE_RANK) if tie_break == "tokenizers" else {byte: byte for byte in range(256)}
        self.merges: list[tuple[int, int, int]] = []
        self.counts: list[int] = []  # how often each merged pair occurred when it was merged

    def tokenizer(self, special_tokens, pattern) -> "BPETokenizer":
        tokenizer = BPETokenizer(self.merges, special_tokens, pattern)
        tokenizer.merge_counts = self.counts
        return tokenizer

    @property
    def full(self) -> bool:
        return len(self.bytes) >= self.limit

    def add_merge(self, left: int, right: int, count: int) -> int:
        data = self.bytes[left] + self.bytes[right]
        # Two different merges can spell the same bytes ("a"+"bc", "ab"+"c"); like `tokenizers`, reuse the id.
        new_id = self.id_of.get(data)
        if new_id is None:
            new_id = len(self.bytes)
            self.bytes[new_id] = data
            self.id_of[data] = new_id
            self.rank[new_id] = new_id  # merged tokens come after all bytes, in the order they were made
        self.merges.append((left, right, new_id))
        self.counts.append(count)
        return new_id


def train_bpe(texts, vocab_size: int, special_tokens=(), pattern: str = GPT2_SPLIT_PATTERN,
              progress: bool = True, tie_break: str = "tokenizers") -> BPETokenizer:
    """Learn byte-level BPE merges until the vocabulary (bytes + merges + special tokens) has vocab_size tokens.

    Incremental: pair counts are kept over the unique pieces, weighted by their frequency; `where` says which
    pieces hold each pair, so a merge touches only those pieces, and a heap finds the most frequent pair.
    tie_break: "tokenizers" (the same merges as Hugging Face `tokenizers`) or "bytes" (see TIE_BREAKS).
    """
    vocab = _Vocabulary(vocab_size, len(special_tokens), tie_break)
    piece_counts = count_pieces(texts, pattern)
    words = [list(text_to_bytes(piece)) for piece in piece_counts]
    freqs = list(piece_counts.values())

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for index, (word, freq) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freq
            where[pair].add(index)

    def heap_entry(pair, count):
        # heapq pops the smallest: the highest count first, then the smallest (left, right) ranks.
        return (-count, vocab.rank[pair[0]], vocab.rank[pair[1]], pair)

    heap = [heap_entry(pair, count) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    bar = tqdm(total=vocab.limit - len(vocab.bytes), desc="BPE merges", disable=not progress, mininterval=0.5)
    while not vocab.full and heap:
        negative_count, _, _, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -negative_count:
            # A stale entry: merges since it was pushed lowered this pair's count. Push it back, updated.
            if count > 0:
                heapq.heappush(heap, heap_entry(pair, count))
            continue
        size_before = len(vocab.bytes)
        new_id = vocab.add_merge(*pair, count)
        new_pairs = set()
        for index in where.pop(pair, ()):
            word, freq = words[index], freqs[index]
            merged = merge(word, pair, new_id)
            if len(merged) == len(word):
                continue
            old = list(zip(word, word[1:]))
            new = list(zip(merged, merged[1:]))
            for p in old:
                pair_counts[p] -= freq
            for p in new:
                pair_counts[p] += freq
                if new_id in p:
                    new_pairs.add(p)
            for p in set(old) - set(new):
                if p in where:
                    where[p].discard(index)
            for p in new:
                where[p].add(index)
            words[index] = merged
        pair_counts.pop(pair, None)
        for p in new_pairs:
            if pair_counts[p] > 0:
                heapq.heappush(heap, heap_entry(p, pair_counts[p]))
        bar.update(len(vocab.bytes) - size_before)
    bar.close()
    return vocab.tokenizer(special_tokens, pattern)


def train_bpe_naive(texts, vocab_size: int, special_tokens=(), pattern: str = GPT2_SPLIT_PATTERN,
                    max_merges: int | None = None, progress: bool = True,
                    tie_break: str = "tokenizers") -> BPETokenizer:
    """The textbook loop: for every merge, count every pair in the whole corpus again, then merge everywhere.

    Same merges as `train_bpe` (same counts, same tie-break), but each merge costs a pass over the corpus.
    max_merges stops early, to time a few merges; the result's `merge_seconds` holds the time of each merge.
    """
    vocab = _Vocabulary(vocab_size, len(special_tokens), tie_break)
    split = regex.compile(pattern)
    chunks = [list(text_to_bytes(piece)) for text in ([texts] if isinstance(texts, str) else texts)
              for piece in split.findall(text)]
    total = vocab.limit - 256 if max_merges is None else min(max_merges, vocab.limit - 256)
    seconds = []
    for _ in tqdm(range(total), desc="BPE merges (naive)", disable=not progress, mininterval=0.5):
        start = time.perf_counter()
        if vocab.full:
            break
        stats = {}
        for chunk in chunks:
            get_stats(chunk, stats)
        if not stats:
            break
        pair = min(stats, key=lambda p: (-stats[p], vocab.rank[p[0]], vocab.rank[p[1]]))
        new_id = vocab.add_merge(*pair, stats[pair])
        chunks = [merge(chunk, pair, new_id) for chunk in chunks]
        seconds.append(time.perf_counter() - start)
    tokenizer = vocab.tokenizer(special_tokens, pattern)
    tokenizer.merge_seconds = seconds
    return tokenizer


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------
# Checking against `tokenizers`


def tokenizers_merges(tokenizer_json: str) -> list[tuple[bytes, bytes]]:
    """The merges of a `tokenizers` BPE (its JSON, `Tokenizer.to_str()`), as pairs of bytes, in order."""
    merges = json.loads(tokenizer_json)["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]  # "Ġ t" (older) or ["Ġ", "t"]
    return [(bytelevel_to_bytes(left), bytelevel_to_bytes(right)) for left, right in pairs]


def merges_as_bytes(tokenizer: BPETokenizer) -> list[tuple[bytes, bytes]]:
    return [(tokenizer.vocab[left], tokenizer.vocab[right]) for left, right in tokenizer.merges]


def id_map_from_tokenizers(tokenizer: BPETokenizer, tokenizers_vocab: dict[str, int]) -> dict[int, int]:
    """{id in `tokenizers`: id in ours} for every token. The two number the same tokens differently: theirs
    puts special tokens first and orders the 256 bytes by stand-in character; ours uses byte values."""
    mapping = {}
    for token, their_id in tokenizers_vocab.items():
        if token in tokenizer.special_tokens:
            mapping[their_id] = tokenizer.special_tokens[token]
        else:
            mapping[their_id] = tokenizer.id_of(bytelevel_to_bytes(token))
    return mapping


# ---------------------------------------------------------------------------------------------------------
# Exercise


def check_merge(merge_fn) -> bool:
    """Checks a learner's `merge(ids, pair, new_id)`; prints ✓, or a hint."""
    cases = [
        (([97, 97, 97, 98, 100, 97, 97, 97, 98, 97, 99], (97, 97), 256), [256, 97, 98, 100, 256, 97, 98, 97, 99]),
        (([1, 2, 3, 1, 2], (1, 2), 4), [4, 3, 4]),
        (([5, 5, 5, 5], (5, 5), 6), [6, 6]),
        (([5, 5, 5], (5, 5), 6), [6, 5]),
        (([1, 2, 3], (3, 1), 9), [1, 2, 3]),
        (([], (1, 2), 3), []),
        (([7], (7, 7), 8), [7]),
    ]
    try:
        for (ids, pair, new_id), expected in cases:
            got = merge_fn(list(ids), pair, new_id)
            if not isinstance(got, (list, tuple)) or list(got) != expected:
                print(f"✗ merge({ids}, {pair}, {new_id}) gave {got}; expected {expected}. "
                      "Hint: walk left to right; when ids[i], ids[i+1] is the pair, emit new_id and jump by 2.")
                return False
    except NotImplementedError:
        print("Not done yet: replace `raise NotImplementedError` with your code, then run this cell again.")
        return False
    except Exception as error:  # the learner's bug, in one line
        print(f"✗ your merge raised {type(error).__name__}: {error}")
        return False
    print(f"✓ merge is right on all {len(cases)} cases, including overlaps like [5, 5, 5].")
    return True
