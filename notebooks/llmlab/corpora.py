"""Readers for the course's corpora in data/ (see data/README.md for sources and licenses)."""

import re
from dataclasses import dataclass
from functools import cache

from llmlab.paths import data_file


def read_text(name: str) -> str:
    """A data file as text; the few Latin-1 speeches are decoded as such."""
    raw = data_file(name).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@cache
def shakespeare() -> str:
    return read_text("tinyshakespeare.txt")


# UTF-8 curly quotes and dashes that were once decoded as Windows-1252 and saved again: "â€œ" was “.
_MOJIBAKE = re.compile("â€(.)?", re.S)


def _unmangle(match: re.Match) -> str:
    try:
        return match.group(0).encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):  # ” is E2 80 9D, and 0x9D has no Windows-1252 character:
        return "”" + (match.group(1) or "")  # its last byte was lost, leaving "â€" before the next character


def repair_mojibake(text: str) -> tuple[str, int]:
    """(text with mojibake such as â€œ â€™ â€" turned back into “ ’ –, the number of repairs)."""
    return _MOJIBAKE.subn(_unmangle, text)


@cache
def tinystories() -> list[str]:
    """The TinyStories validation sample as paragraphs (the first, cut mid-text, is dropped), mojibake repaired.

    The sample lost the markers between stories, so one story may span several paragraphs;
    `llmlab.data.tinystories_documents` regroups them into stories. The course validates on these stories.
    """
    text, _ = repair_mojibake(read_text("tinystories_val_sample.txt"))
    stories = [s.strip() for s in re.split(r"\n\s*\n", text)]
    return [s for s in stories[1:] if s]


@cache
def tinystories_train() -> list[str]:
    """Stories of the TinyStories train split (a 2 MiB head of it); the last one, cut mid-sentence, is dropped.

    The course pretrains on these; they never overlap the validation stories of `tinystories()`.
    """
    stories = [s.strip() for s in read_text("tinystories_train_head.txt").split("<|endoftext|>")]
    return [s for s in stories[:-1] if s]


@dataclass(frozen=True)
class Speech:
    year: int
    speaker: str
    kind: str  # "inaugural" or "state of the union"
    text: str

    @property
    def title(self) -> str:
        return f"{self.year} {self.speaker} ({self.kind})"


@cache
def speeches() -> list[Speech]:
    """US inaugural addresses (1789–2021) and State of the Union addresses (1945–2006), by year."""
    found = []
    for folder, kind in (("nltk_inaugural", "inaugural"), ("nltk_state_union", "state of the union")):
        for path in sorted(data_file(folder).glob("*.txt")):
            year, _, speaker = path.stem.partition("-")
            speaker = speaker.replace("-", " ").strip() or "unknown"
            found.append(Speech(int(year[:4]), speaker, kind, read_text(f"{folder}/{path.name}").strip()))
    return sorted(found, key=lambda s: (s.year, s.kind))


@cache
def polarity_sentences() -> tuple[list[str], list[int]]:
    """Rotten Tomatoes sentences and labels (1 positive, 0 negative), in a fixed interleaved order."""
    positive = read_text("nltk_sentence_polarity/rt-polarity.pos").splitlines()
    negative = read_text("nltk_sentence_polarity/rt-polarity.neg").splitlines()
    sentences, labels = [], []
    for pos, neg in zip(positive, negative):
        sentences += [pos.strip(), neg.strip()]
        labels += [1, 0]
    return sentences, labels


@cache
def english_words() -> list[str]:
    return read_text("words_alpha.txt").split()


@cache
def names() -> list[str]:
    return read_text("names.txt").split()
