"""Pretraining data: a mixture of sources -> documents -> one packed token stream -> context-length rows.

The stages, in the order a pretraining pipeline runs them:

    documents per source  (`mixture_documents`: stories, Shakespeare passages)
    train / validation    (`split_documents`: whole documents held out, so validation text is never trained on)
    a sampled mixture     (`sample_mixture`: each source gives its share of the training tokens)
    one stream            (`pack_documents`: <|endoftext|> before every document)
    rows                  (`cut_rows`: block_size + 1 tokens each; inputs and targets are a row shifted by one)
    batches               (`batches`: random rows, reshuffled every pass)

Nothing here knows about models or tokenizers: documents arrive as lists of token ids.
"""

import math
import random
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from llmlab import corpora
from llmlab.checks import CourseError, check_number, check_positive_int

IGNORE_INDEX = -100  # the target value F.cross_entropy skips (gpt.py passes ignore_index=-100)
MAX_BLOCK_SIZE = 65_536  # rows longer than any context window of the course are refused, not allocated


# --- documents of each source ---------------------------------------------------------------------------------

# TinyStories' sample keeps paragraphs but lost the separators between stories; these openings start a story.
_STORY_OPENINGS = re.compile(r"^(Once upon a time|Once there was|Once,|There once was|There was once)")


def tinystories_documents() -> list[str]:
    """The TinyStories sample as whole stories: paragraphs regrouped, a new story at each fairy-tale opening.

    A story that opens some other way is glued to the one before it: a rare, harmless seam.
    """
    stories: list[list[str]] = []
    for paragraph in corpora.tinystories():
        if not stories or _STORY_OPENINGS.match(paragraph):
            stories.append([])
        stories[-1].append(paragraph)
    return ["\n\n".join(story) for story in stories]


def shakespeare_documents(max_chars: int = 1500) -> list[str]:
    """tinyshakespeare as passages of consecutive speeches, each up to about max_chars characters.

    The file is one long run of plays without title lines, so a "document" is a passage of a scene.
    """
    passages, current, size = [], [], 0
    for speech in corpora.shakespeare().strip().split("\n\n"):
        if current and size + len(speech) > max_chars:
            passages.append("\n\n".join(current))
            current, size = [], 0
        current.append(speech)
        size += len(speech) + 2
    if current:
        passages.append("\n\n".join(current))
    return passages


def tinystories_train_documents() -> list[str]:
    """Stories of the TinyStories train split: what the base model reads (its validation stories are others)."""
    return corpora.tinystories_train()


# The training documents of each source, and the sources that come with a validation set of their own (the
# others are split: `split_documents`).
SOURCES = {
    "TinyStories": tinystories_train_documents,
    "Shakespeare": shakespeare_documents,
}
VALIDATION_SOURCES = {
    "TinyStories": tinystories_documents,  # TinyStories' validation split, never trained on
}


def mixture_documents(names: Iterable[str] = tuple(SOURCES)) -> dict[str, list[str]]:
    """The documents of each named source."""
    if isinstance(names, str):
        raise CourseError(f"names must be a list of source names such as {list(SOURCES)}, not the str {names!r}")
    unknown = [name for name in names if name not in SOURCES]
    if unknown:
        raise KeyError(f"unknown source {unknown}; the sources are {list(SOURCES)}")
    return {name: SOURCES[name]() for name in names}


# --- train / validation split ---------------------------------------------------------------------------------

def split_documents(documents: Sequence, val_fraction: float, seed: int = 0) -> tuple[list, list]:
    """(train, validation): a seeded random val_fraction of whole documents is held out (at least one, and at
    least one is kept for training)."""
    if not 0 < check_number("val_fraction", val_fraction) < 1:
        raise CourseError(f"val_fraction must be between 0 and 1, not {val_fraction}")
    if len(documents) < 2:
        raise ValueError("splitting needs at least two documents")
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(documents) * val_fraction)), len(documents) - 1)  # neither split is empty
    held_out = set(order[:n_val])
    train = [d for i, d in enumerate(documents) if i not in held_out]
    val = [d for i, d in enumerate(documents) if i in held_out]
    return train, val


# --- sampling the mixture -------------------------------------------------------------------------------------

@dataclass
class MixtureRow:
    """One line of a mixture table, as pretraining papers print it (LLaMA's Table 1)."""

    source: str
    documents: int
    tokens: int  # tokens the source holds (its training split)
    proportion: float  # the share of the training tokens drawn from it
    sampled_tokens: int
    epochs: float  # how many times, on average, each of its tokens is seen


def sample_mixture(sources: dict[str, list[list[int]]], proportions: dict[str, float], total_tokens: int,
                   seed: int = 0) -> tuple[list[list[int]], list[MixtureRow]]:
    """Draw documents so that each source gives about proportions[source] of total_tokens.

    A source is read in a shuffled order and started again (a new epoch, a new order) when it runs out, so a
    small, valuable source can be seen several times and a big one less than once, the way GPT-3 and LLaMA
    weight their sources. The last document drawn from a source is cut to fit its budget exactly.
    Returns the drawn documents, shuffled across sources, and the mixture table.
    """
    if set(proportions) != set(sources):
        raise ValueError(f"proportions name {sorted(proportions)}, the sources are {sorted(sources)}")
    for name, p in proportions.items():
        check_number(f"proportions[{name!r}]", p, minimum=0)
    if not math.isclose(sum(proportions.values()), 1.0, abs_tol=1e-6):
        raise ValueError(f"proportions must be >= 0 and add up to 1, not {proportions}")
    check_positive_int("total_tokens", total_tokens, maximum=100_000_000)  # a typo would draw for hours
    rng = random.Random(seed)
    drawn, table = [], []
    for name, documents in sources.items():
        available = sum(len(d) for d in documents)
        if available == 0:
            raise ValueError(f"source {name!r} has no tokens")
        budget = round(total_tokens * proportions[name])
        taken = 0
        while taken < budget:
            order = list(range(len(documents)))
            rng.shuffle(order)
            for i in order:
                if taken >= budget:
                    break
                document = documents[i][: budget - taken]  # the last one is cut to fit: shares stay exact
                drawn.append(document)
                taken += len(document)
        table.append(MixtureRow(name, len(documents), available, proportions[name], taken, taken / available))
    rng.shuffle(drawn)
    return drawn, table


# --- packing and rows -----------------------------------------------------------------------------------------

def pack_documents(documents: Iterable[Sequence[int]], eot: int) -> torch.Tensor:
    """One 1-D stream of token ids: <|endoftext|> before every document.

    The model learns where documents end, and that what follows <|endoftext|> is a fresh document; starting
    generation from <|endoftext|> alone then "dreams" a new one.
    """
    stream = []
    for document in documents:
        stream.append(eot)
        stream.extend(document)
    return torch.tensor(stream, dtype=torch.long)


def cut_rows(stream: torch.Tensor, block_size: int) -> torch.Tensor:
    """The stream cut into rows of block_size + 1 tokens, shape (n_rows, block_size + 1).

    Row i starts at token i * block_size, so consecutive rows share one token: the last of a row is the first
    of the next. Each row gives block_size (input, next token) pairs, and every pair of the stream is in
    exactly one row: no token is lost. The last row is filled up with IGNORE_INDEX, which the loss skips.
    """
    block_size = check_positive_int("block_size", block_size, maximum=MAX_BLOCK_SIZE)
    if not isinstance(stream, torch.Tensor) or stream.dim() != 1 or stream.numel() < 2:
        raise ValueError("cut_rows needs a 1-D stream of at least two tokens")
    n_rows = math.ceil((stream.numel() - 1) / block_size)
    padded = torch.full((n_rows * block_size + 1,), IGNORE_INDEX, dtype=torch.long)
    padded[: stream.numel()] = stream
    return padded.unfold(0, block_size + 1, block_size)  # a view: overlapping windows, no copy


def inputs_and_targets(rows: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of rows: the first block_size tokens, and the last block_size (shifted by one).

    Padding in the inputs becomes pad_id (an embedding needs a real id); it only precedes ignored targets,
    and causal attention keeps it from changing any prediction before it.
    """
    inputs, targets = rows[:, :-1], rows[:, 1:].contiguous()
    return inputs.masked_fill(inputs == IGNORE_INDEX, pad_id), targets


def batches(stream: torch.Tensor, block_size: int, batch_size: int, pad_id: int,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (inputs, targets) batches of random rows of the stream, shapes (batch_size, block_size).

    Each pass over the data shuffles the rows; from the second pass on the rows are also cut at a random
    offset, so a repeated source is seen in new windows rather than the same ones again.
    """
    # checked here, at the call, not at the first next(): a generator would only fail (or loop) later
    block_size = check_positive_int("block_size", block_size, maximum=MAX_BLOCK_SIZE)
    batch_size = check_positive_int("batch_size", batch_size)
    n_rows = len(cut_rows(stream, block_size))
    if n_rows < batch_size:
        raise CourseError(f"batch_size {batch_size} is more than the {n_rows} rows of {block_size + 1} tokens the "
                          f"stream holds: use a batch_size of at most {n_rows}, or more data")
    return _batches(stream, block_size, batch_size, pad_id, generator)


def _batches(stream, block_size, batch_size, pad_id, generator):
    passes = 0
    while True:
        offset = 0
        if passes > 0 and block_size > 1:
            offset = int(torch.randint(1, block_size, (1,), generator=generator))
        if stream.numel() - offset < 2 or len(cut_rows(stream[offset:], block_size)) < batch_size:
            offset = 0  # the offset would cost the one row a full batch needs: this pass reads the rows uncut
        rows = cut_rows(stream[offset:], block_size)
        order = torch.randperm(len(rows), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield inputs_and_targets(rows[order[start:start + batch_size]], pad_id)
        passes += 1
