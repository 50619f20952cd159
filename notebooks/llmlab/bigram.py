"""A character bigram model: next-token prediction at its simplest, from counts.

It predicts each character from the one before it alone: its context window is one character.
"""

import torch

from llmlab.checks import CourseError, check_new_tokens, check_number, check_positive_int, check_text


class CharVocabulary:
    """Every distinct character of a text, numbered in sorted order: the tokenizer of a character model."""

    def __init__(self, text: str):
        check_text("text", text, allow_empty=True)
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        check_text("text", text, allow_empty=True)
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}; "
                             f"it has {len(self)}: {''.join(self.chars)!r}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self.chars)]
        if bad:
            raise CourseError(f"ids must lie in 0 .. {len(self.chars) - 1} (the vocabulary), not {bad[:5]}")
        return "".join(self.chars[i] for i in ids)


class CharBigram:
    def __init__(self, text: str, smoothing: float = 1.0):
        if len(check_text("text", text, allow_empty=True)) < 2:
            raise CourseError(f"text must have at least two characters to count pairs in, not {text!r:.60}")
        check_number("smoothing", smoothing, minimum=0, maximum=1e6)
        self.vocab = CharVocabulary(text)
        self.chars, self.index = self.vocab.chars, self.vocab.index
        ids = self.encode(text)
        n = len(self.chars)
        # counts[a, b]: how often character b follows character a
        self.counts = torch.zeros(n, n, dtype=torch.long)
        self.counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.long), accumulate=True)
        smoothed = self.counts.float() + smoothing  # add-one smoothing: nothing is impossible
        totals = smoothed.sum(dim=1, keepdim=True)
        # without smoothing, a character seen only at the very end has no counts: its row is uniform, not 0 / 0
        self.probs = torch.where(totals > 0, smoothed / totals.where(totals > 0, 1.0), torch.full_like(smoothed, 1 / n))

    def encode(self, text: str) -> torch.Tensor:
        return self.vocab.encode(text)

    def decode(self, ids) -> str:
        return self.vocab.decode(ids)

    def next_char_probs(self, char: str) -> dict[str, float]:
        if len(check_text("char", char, allow_empty=True)) != 1:
            raise CourseError(f"char must be exactly one character, not {char!r:.60}")
        row = self.probs[self.encode(char)[0]]
        return {c: float(p) for c, p in zip(self.chars, row)}

    def nll(self, text: str) -> float:
        """Mean negative log-likelihood per character (nats): the loss every language model minimises."""
        if len(check_text("text", text, allow_empty=True)) < 2:
            raise CourseError(f"text must have at least two characters (one prediction), not {text!r:.60}")
        ids = self.encode(text)
        return float(-self.probs[ids[:-1], ids[1:]].log().mean())

    def complete(self, prompt: str, n: int, *, seed: int = 0) -> str:
        """The prompt followed by n sampled characters (at most MAX_NEW_TOKENS): the model 'dreams' text."""
        if not check_text("prompt", prompt, allow_empty=True):
            raise CourseError("prompt is empty: type at least one character for the model to continue")
        n = check_new_tokens("n", n)
        check_positive_int("seed", seed, minimum=0, maximum=2**63 - 1)
        generator = torch.Generator().manual_seed(seed)
        ids = list(self.encode(prompt))
        for _ in range(n):
            ids.append(torch.multinomial(self.probs[ids[-1]], 1, generator=generator).item())
        return self.decode(ids)
