"""A character bigram model: next-token prediction at its simplest, from counts.

It predicts each character from the one before it alone: its context window is one character.
"""

import torch


class CharVocabulary:
    """Every distinct character of a text, numbered in sorted order: the tokenizer of a character model."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}; "
                             f"it has {len(self)}: {''.join(self.chars)!r}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


class CharBigram:
    def __init__(self, text: str, smoothing: float = 1.0):
        self.vocab = CharVocabulary(text)
        self.chars, self.index = self.vocab.chars, self.vocab.index
        ids = self.encode(text)
        n = len(self.chars)
        # counts[a, b]: how often character b follows character a
        self.counts = torch.zeros(n, n, dtype=torch.long)
        self.counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.long), accumulate=True)
        smoothed = self.counts.float() + smoothing  # add-one smoothing: nothing is impossible
        self.probs = smoothed / smoothed.sum(dim=1, keepdim=True)

    def encode(self, text: str) -> torch.Tensor:
        return self.vocab.encode(text)

    def decode(self, ids) -> str:
        return self.vocab.decode(ids)

    def next_char_probs(self, char: str) -> dict[str, float]:
        row = self.probs[self.encode(char)[0]]
        return {c: float(p) for c, p in zip(self.chars, row)}

    def nll(self, text: str) -> float:
        """Mean negative log-likelihood per character (nats): the loss every language model minimises."""
        ids = self.encode(text)
        return float(-self.probs[ids[:-1], ids[1:]].log().mean())

    def complete(self, prompt: str, n: int, *, seed: int = 0) -> str:
        """The prompt followed by n sampled characters: the model 'dreams' text."""
        generator = torch.Generator().manual_seed(seed)
        ids = list(self.encode(prompt))
        for _ in range(n):
            ids.append(torch.multinomial(self.probs[ids[-1]], 1, generator=generator).item())
        return self.decode(ids)
