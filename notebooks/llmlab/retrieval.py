"""Retrieval: look a word up in a dictionary and put what was found into the prompt.

The index is notebook 01's TF-IDF (`bow.TfidfBag`), over character n-grams of each headword instead of words:
"strawbery" shares most of its 2- to 4-letter pieces with "strawberry", so a misspelled query still finds the
entry. The dictionary is Open English WordNet's first sense per part of speech for common words
(data/oewn_common_definitions.tsv, CC BY 4.0), the file the course's word list comes from.

    index = dictionary_index()
    index.lookup("strawbery")                   -> [Hit("strawberry", 0.83, [("noun", "sweet fleshy red fruit")]), ...]
    spelling_context("strawberry")              -> 'Dictionary: "strawberry" is spelled s t r a w b e r r y.'
    with_context(question, context)             -> the user message with the hit above the question
"""

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from llmlab.bow import TfidfBag, cosine_similarities
from llmlab.checks import CourseError, check_positive_int, check_text
from llmlab.paths import data_file

NGRAM_RANGE = (2, 4)


def char_wb_ngrams(text: str, ngram_range: tuple[int, int] = NGRAM_RANGE) -> list[str]:
    """The character n-grams of each word, padded with a space at both ends (scikit-learn's "char_wb"):
    "berry", (2, 2) -> [" b", "be", "er", "rr", "ry", "y "]. A padded word no longer than n gives itself, once,
    and no longer n-grams (as scikit-learn does)."""
    low, high = ngram_range
    grams = []
    for word in text.lower().split():
        padded = f" {word} "
        for n in range(low, high + 1):
            grams += [padded[i:i + n] for i in range(max(len(padded) - n + 1, 1))]
            if len(padded) <= n:
                break
    return grams


class CharNgramTfidf(TfidfBag):
    """TF-IDF (notebook 01's, unchanged) over character n-grams of words instead of the words themselves."""

    def __init__(self, ngram_range=NGRAM_RANGE, **settings):
        super().__init__(**settings)
        self.char_ngram_range = tuple(ngram_range)

    def analyze(self, text: str) -> list[str]:
        return char_wb_ngrams(text, self.char_ngram_range)


@dataclass(frozen=True)
class Hit:
    word: str
    score: float  # cosine similarity of the query's n-grams and the headword's
    senses: tuple[tuple[str, str], ...]  # (part of speech, definition), most frequent first

    @property
    def definition(self) -> str:
        return self.senses[0][1]


@cache
def dictionary() -> dict[str, tuple[tuple[str, str], ...]]:
    """headword -> its senses (part of speech, definition): the first sense per part of speech, nouns first."""
    senses: dict[str, list[tuple[str, str]]] = {}
    for line in data_file("oewn_common_definitions.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        _, word, pos, definition = line.split("\t")
        senses.setdefault(word.lower(), []).append((pos, definition))
    order = {"noun": 0, "verb": 1, "adj": 2, "adv": 3}
    return {w: tuple(sorted(s, key=lambda p: order.get(p[0], 4))) for w, s in senses.items()}


class DictionaryIndex:
    """Headwords indexed by their character n-grams; `lookup` finds the closest headwords to a query word."""

    def __init__(self, entries: dict):
        if not entries:
            raise CourseError("the dictionary is empty: nothing to index")
        self.entries = entries
        self.words = list(entries)
        self.bag = CharNgramTfidf(sublinear_tf=True)
        self.matrix = self.bag.fit_transform(self.words)

    def lookup(self, query: str, k: int = 3) -> list[Hit]:
        """The k headwords most like query (misspellings welcome), best first."""
        check_text("query", query, max_chars=100)
        check_positive_int("k", k, maximum=100)
        vector = self.bag.transform([query])
        if vector.nnz == 0:
            raise CourseError(f"{query!r} shares no run of letters with any headword; type a word")
        scores = cosine_similarities(vector, self.matrix)
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(self.words[i], float(scores[i]), self.entries[self.words[i]]) for i in best]


@cache
def dictionary_index() -> DictionaryIndex:
    """The index over every headword of the dictionary (about 12,000 words; built in about a second)."""
    return DictionaryIndex(dictionary())


# --- the hit, put into the prompt ----------------------------------------------------------------------------------

_QUOTED = re.compile(r"\"([^\"]+)\"")


def question_word(question: str) -> str:
    """The word a question asks about: the one in double quotes ("strawberry"), else the last word."""
    check_text("question", question)
    quoted = _QUOTED.findall(question)
    words = re.findall(r"[A-Za-z]+", quoted[-1] if quoted else question)
    if not words:
        raise CourseError(f"no word to look up in {question!r:.60}")
    return words[-1].lower()


def spelling_context(word: str) -> str:
    """What retrieval adds for a letter question: the word spelled out, letter by letter."""
    return f'Dictionary: "{word}" is spelled {" ".join(word)}.'


def definition_context(hit: Hit) -> str:
    pos, definition = hit.senses[0]
    return f'Dictionary: "{hit.word}" ({pos}): {definition}.'


def with_context(question: str, context: str) -> str:
    """The user message of a retrieval-augmented question: the retrieved text first, then the question."""
    return f"{context}\n{question}"


def retrieved_spelling(question: str, index: DictionaryIndex | None = None) -> tuple[str, str]:
    """(the headword found for the question's word, the augmented question)."""
    hit = (index or dictionary_index()).lookup(question_word(question), k=1)[0]
    return hit.word, with_context(question, spelling_context(hit.word))
