"""Word tasks: one object per question gives its prompt, its answer, a grade and the RL reward.

SFT data (notebook 08), reward labels (09), RL rewards (10, 11) and every accuracy (08-12) ask these objects,
so no two stages can disagree about what "correct" means. The course's thread is the first task: how many
times does a letter occur in a word?

The words come from a dictionary of common English words (Open English WordNet headwords among the 20,000
most frequent words of subtitles). They are split ONCE, by a hash of each word, into training words and
held-out words (`word_split`). No stage of the course trains on a held-out word, and every accuracy from
notebook 08 on is measured on `heldout_questions()`: the same questions for every model. "strawberry" and every
word the course asks about by name (`NAMED_WORDS`) are held out, so a model that answers them has not seen them.

Counting questions are balanced over the true count (0, 1, 2, 3 or more): otherwise "always say 1" looks
clever (drawing the letter from the word's own letters makes the answer 1 about 78% of the time). Report every
accuracy beside `constant_baseline`, the best a model that ignores the question can do.
"""

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache

from llmlab.checks import CourseError, check_positive_int
from llmlab.paths import data_file

NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# How often each letter occurs in English text (percent): letters for "zero" questions are drawn this way, so
# that "how many 'e's" is asked as often as it would be in real life, not mostly "how many 'q's".
LETTER_FREQUENCY = dict(zip(LETTERS, [8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4, 6.7,
                                      7.5, 1.9, 0.095, 6.0, 6.3, 9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074]))
_NUMBER = re.compile(r"(?<![\w-])(-?\d+|" + "|".join(NUMBER_WORDS) + r")(?![\w])")


def _check_word(word) -> str:
    if not isinstance(word, str):
        raise CourseError(f"the word must be text, not {type(word).__name__} {word!r}")
    clean = word.strip().lower()
    if not clean or not clean.isascii() or not clean.isalpha():
        raise CourseError(f"the word must be letters a-z only (no digits, spaces or accents), not {word!r}")
    if len(clean) > 40:
        raise CourseError(f"the word has {len(clean)} letters; the word tasks take words of at most 40")
    return clean


def _check_letter(letter) -> str:
    if not isinstance(letter, str) or len(letter.strip()) != 1 or letter.strip().lower() not in LETTERS:
        raise CourseError(f"the letter must be one letter a-z, not {letter!r}")
    return letter.strip().lower()


def last_number(completion: str) -> int | None:
    """The last number a completion states, in digits or as a word ("three"); None if it states none.

    The last one, because a model that reasons ("r(1) ... r(3), so 3") states its answer at the end.
    A minus sign is kept: "-3" is -3, a wrong count, never 3.
    """
    if not isinstance(completion, str):
        raise CourseError(f"a completion must be text, not {type(completion).__name__}")
    found = _NUMBER.findall(completion.lower())
    if not found:
        return None
    last = found[-1]
    return int(last) if last.lstrip("-").isdigit() else NUMBER_WORDS[last]


class WordTask:
    """A question about one word. Subclasses define question, answer, answer_text and parse."""

    kind = "word task"
    word: str

    @property
    def question(self) -> str:
        raise NotImplementedError

    @property
    def answer(self):
        raise NotImplementedError

    @property
    def answer_text(self) -> str:
        """The reply an assistant should give: what supervised fine-tuning trains on."""
        raise NotImplementedError

    def parse(self, completion: str):
        raise NotImplementedError

    def grade(self, completion: str) -> bool:
        """Is the completion's answer right? Never raises on a malformed completion: it is just wrong."""
        return self.parse(completion) == self.answer

    def reward(self, completion: str) -> float:
        """The verifiable reward for RL: 1.0 for a right answer, 0.0 otherwise."""
        return 1.0 if self.grade(completion) else 0.0


@dataclass(frozen=True)
class LetterCount(WordTask):
    """How many times does `letter` occur in `word`? (Case does not matter: 'R' counts the r's.)"""

    word: str
    letter: str
    kind = "letter count"

    def __post_init__(self):
        object.__setattr__(self, "word", _check_word(self.word))
        object.__setattr__(self, "letter", _check_letter(self.letter))

    @property
    def question(self) -> str:
        return f"How many '{self.letter}'s are in the word \"{self.word}\"?"

    @property
    def answer(self) -> int:
        return self.word.count(self.letter)  # the tool: exact, instant, and blind to tokens

    @property
    def answer_text(self) -> str:
        n = self.answer
        return f"There {'is' if n == 1 else 'are'} {n} '{self.letter}'{'' if n == 1 else 's'} in \"{self.word}\"."

    def parse(self, completion: str) -> int | None:
        return last_number(completion)


@dataclass(frozen=True)
class OneWordTask(WordTask):
    """A question about a word alone (its letters, its length): the word is checked once, here."""

    word: str

    def __post_init__(self):
        object.__setattr__(self, "word", _check_word(self.word))


@dataclass(frozen=True)
class Spelling(OneWordTask):
    """Spell the word letter by letter."""

    kind = "spelling"

    @property
    def question(self) -> str:
        return f"Spell the word \"{self.word}\"."

    @property
    def answer(self) -> str:
        return self.word

    @property
    def answer_text(self) -> str:
        return " ".join(self.word)

    def parse(self, completion: str) -> str:
        """The letters of the first line, joined ("s t r a w" and "s-t-r-a-w" both read "straw")."""
        first_line = completion.strip().split("\n")[0] if isinstance(completion, str) else ""
        return "".join(ch for ch in first_line.lower() if ch in LETTERS)


@dataclass(frozen=True)
class FirstLetter(OneWordTask):
    kind = "first letter"

    @property
    def question(self) -> str:
        return f"What is the first letter of the word \"{self.word}\"?"

    @property
    def answer(self) -> str:
        return self.word[0]

    @property
    def answer_text(self) -> str:
        return f"The first letter of \"{self.word}\" is '{self.answer}'."

    def parse(self, completion: str) -> str | None:
        """The last letter written alone in quotes ('s'), or else the last one-letter word."""
        if not isinstance(completion, str):
            return None
        quoted = re.findall(r"['\"]([a-zA-Z])['\"]", completion)
        single = quoted or re.findall(r"\b([a-zA-Z])\b", completion)
        return single[-1].lower() if single else None


@dataclass(frozen=True)
class LastLetter(FirstLetter):
    kind = "last letter"

    @property
    def question(self) -> str:
        return f"What is the last letter of the word \"{self.word}\"?"

    @property
    def answer(self) -> str:
        return self.word[-1]

    @property
    def answer_text(self) -> str:
        return f"The last letter of \"{self.word}\" is '{self.answer}'."


@dataclass(frozen=True)
class WordLength(OneWordTask):
    kind = "word length"

    @property
    def question(self) -> str:
        return f"How many letters are in the word \"{self.word}\"?"

    @property
    def answer(self) -> int:
        return len(self.word)

    @property
    def answer_text(self) -> str:
        return f"The word \"{self.word}\" has {self.answer} letters."

    def parse(self, completion: str) -> int | None:
        return last_number(completion)


STRAWBERRY = LetterCount("strawberry", "r")
TASK_KINDS = {task.kind: task for task in (LetterCount, Spelling, FirstLetter, LastLetter, WordLength)}


# --- the words, split once -----------------------------------------------------------------------------------

# Words the course asks about by name: always held out, so no stage of the course ever trains on them.
NAMED_WORDS = ("strawberry", "mississippi", "bookkeeper", "raspberry", "blueberry", "banana", "committee",
               "balloon", "coffee", "letter", "assassin", "necessary", "occurrence", "parallel", "cherry",
               "apple", "berry", "straw", "hello", "world", "tomorrow", "bookkeeping", "address", "success")
HELDOUT_SHARE = 0.2  # of the dictionary's words, chosen by a hash of each word (not by position or chance)


@dataclass(frozen=True)
class WordSplit:
    train: tuple[str, ...]
    held_out: tuple[str, ...]


def _held_out_by_hash(word: str) -> bool:
    """A fixed coin flip per word: the same on every machine, and unchanged when the word list grows."""
    return int(hashlib.sha256(word.encode()).hexdigest()[:8], 16) < HELDOUT_SHARE * 16 ** 8


@cache
def dictionary_words(min_length: int = 3, max_length: int = 12) -> tuple[str, ...]:
    """Common English words, most frequent first: WordNet headwords among the 20,000 most frequent words of
    subtitles (data/oewn_common_definitions.tsv), lowercase a-z only, min_length to max_length letters."""
    words, seen = [], set()
    for line in data_file("oewn_common_definitions.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        word = line.split("\t")[1]
        if word not in seen and min_length <= len(word) <= max_length and word.isascii() and word.isalpha() \
                and word.islower():
            seen.add(word)
            words.append(word)
    return tuple(words)


@cache
def word_split() -> WordSplit:
    """The one split of the course's words: training words and held-out words (NAMED_WORDS always held out)."""
    words = dictionary_words()
    named = set(NAMED_WORDS)
    train = tuple(w for w in words if w not in named and not _held_out_by_hash(w))
    held_out = tuple(dict.fromkeys([*NAMED_WORDS, *(w for w in words if w not in named and _held_out_by_hash(w))]))
    return WordSplit(train, held_out)


def check_training_words(words) -> None:
    """Refuse a training set that contains a held-out word: every training set of the course passes here."""
    leaked = sorted(set(words) & set(word_split().held_out))
    if leaked:
        raise CourseError(f"{len(leaked)} held-out words would be trained on (e.g. {leaked[:5]}); "
                          "draw training words from word_split().train")


# --- questions -----------------------------------------------------------------------------------------------

COUNT_BUCKETS = (0, 1, 2, 3)  # the last bucket is "3 or more"


def _bucket(count: int) -> int:
    return min(count, COUNT_BUCKETS[-1])


def letter_count_questions(words, n: int, *, seed: int = 0) -> list[LetterCount]:
    """n letter-count questions over words, balanced over the true count 0, 1, 2 and 3+ (a quarter each).

    For a count of 0 the letter is one the word lacks, drawn by how common letters are in English; for the other
    counts it is a letter the word holds that many times. Seeded: the same arguments give the same questions.
    """
    check_positive_int("n", n)
    words = [w if isinstance(w, str) and w.isascii() and w.isalpha() and w.islower() and len(w) <= 40
             else _check_word(w) for w in words]  # the quick test first: word lists are long
    by_bucket: dict[int, list[tuple[str, str]]] = {b: [] for b in COUNT_BUCKETS}
    for word in dict.fromkeys(words):
        for letter in sorted(set(word)):
            by_bucket[_bucket(word.count(letter))].append((word, letter))
    empty = [b for b in COUNT_BUCKETS[1:] if not by_bucket[b]]
    if empty:
        raise CourseError(f"no word in the list has a letter {empty[0]}{'+' if empty[0] == 3 else ''} times; "
                          "balanced questions need a longer word list")
    rng = random.Random(seed)
    by_bucket[0] = [(word, "") for word in dict.fromkeys(words)]  # the letter is drawn below
    needed = {b: len(range(i, n, len(COUNT_BUCKETS))) for i, b in enumerate(COUNT_BUCKETS)}
    decks = {b: [] for b in COUNT_BUCKETS}  # each bucket dealt without repeats until it runs out, then again
    questions = []
    for i in range(n):
        bucket = COUNT_BUCKETS[i % len(COUNT_BUCKETS)]
        if not decks[bucket]:
            pool = by_bucket[bucket]
            decks[bucket] = rng.sample(pool, min(len(pool), needed[bucket]))
        word, letter = decks[bucket].pop()
        if bucket == 0:
            absent = [c for c in LETTERS if c not in word]
            letter = rng.choices(absent, weights=[LETTER_FREQUENCY[c] for c in absent])[0]
        questions.append(LetterCount(word, letter))
    rng.shuffle(questions)
    return questions


def task_questions(words, n: int, *, kinds=tuple(TASK_KINDS), seed: int = 0) -> list[WordTask]:
    """n questions over words, cycling through the task kinds; letter counts balanced over the true count."""
    check_positive_int("n", n)
    unknown = [k for k in kinds if k not in TASK_KINDS]
    if unknown:
        raise CourseError(f"unknown task kind {unknown[0]!r}; the kinds are {list(TASK_KINDS)}")
    per_kind = {kind: -(-n // len(kinds)) for kind in kinds}
    rng = random.Random(seed)
    pool = list(dict.fromkeys(_check_word(w) for w in words))
    made: list[WordTask] = []
    for kind, count in per_kind.items():
        if kind == LetterCount.kind:
            made += letter_count_questions(pool, count, seed=seed)
        else:
            made += [TASK_KINDS[kind](rng.choice(pool)) for _ in range(count)]
    rng.shuffle(made)
    return made[:n]


HELDOUT_QUESTIONS = 500  # letter-count questions of the held-out evaluation; notebooks 08-12 all use these


def heldout_questions(n: int = HELDOUT_QUESTIONS, *, kind: str = LetterCount.kind) -> list[WordTask]:
    """The fixed evaluation questions over held-out words: the same for every model of notebooks 08-12.

    fast mode may ask for fewer (the first n of the same list, so fewer is a subset, not a new draw).
    """
    return task_questions(word_split().held_out, HELDOUT_QUESTIONS, kinds=(kind,), seed=2026)[:n]


# --- scoring -------------------------------------------------------------------------------------------------

def accuracy(questions, completions) -> float:
    """Share of completions the questions grade right (one completion per question)."""
    questions, completions = list(questions), list(completions)
    if len(questions) != len(completions):
        raise CourseError(f"{len(questions)} questions but {len(completions)} completions; give one each")
    if not questions:
        raise CourseError("there is nothing to score: no questions")
    return sum(q.grade(c) for q, c in zip(questions, completions)) / len(questions)


def constant_baseline(questions) -> tuple[object, float]:
    """(the most common right answer, its share): what a model that always gives one answer scores."""
    answers = Counter(q.answer for q in questions)
    if not answers:
        raise CourseError("there is nothing to score: no questions")
    answer, hits = answers.most_common(1)[0]
    return answer, hits / sum(answers.values())
