"""Evaluation tasks: one object per task gives examples, grades an answer and returns the RL reward.

SFT data, evaluation and reinforcement learning all ask the same object, so they can never disagree about what
"correct" means. The course's thread is the first task: how many times does a letter occur in a word?
"""

import random
import re
from dataclasses import dataclass

NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10}


@dataclass(frozen=True)
class LetterCount:
    """How many times does `letter` occur in `word`?"""

    word: str
    letter: str

    @property
    def question(self) -> str:
        return f"How many '{self.letter}'s are in the word \"{self.word}\"?"

    @property
    def answer(self) -> int:
        return self.word.count(self.letter)  # the tool: exact, instant, and blind to tokens

    def parse(self, completion: str) -> int | None:
        """The count a completion gives: its last number, in digits or as a word (None if it gives none)."""
        found = re.findall(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\b", completion.lower())
        if not found:
            return None
        last = found[-1]
        return int(last) if last.isdigit() else NUMBER_WORDS[last]

    def grade(self, completion: str) -> bool:
        return self.parse(completion) == self.answer

    def reward(self, completion: str) -> float:
        """The verifiable reward for RL: 1 for the right count, 0 otherwise."""
        return 1.0 if self.grade(completion) else 0.0


STRAWBERRY = LetterCount("strawberry", "r")


def letter_count_examples(words: list[str], n: int, *, seed: int = 0) -> list[LetterCount]:
    """n questions over words, each asking for a letter the word contains (fixed by the seed)."""
    rng = random.Random(seed)
    pool = [w for w in words if w.isalpha()]
    chosen = []
    for _ in range(n):
        word = rng.choice(pool)
        chosen.append(LetterCount(word, rng.choice(sorted(set(word)))))
    return chosen
