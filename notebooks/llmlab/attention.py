"""The pieces of a transformer, built by hand in notebook 05 before the course GPT puts them together.

Scaled dot-product attention with its weights, the masks of the three transformer families (encoder,
decoder, encoder-decoder), sinusoidal positions, the parameter count of a GPT from a formula, and the three
pretraining objectives (causal LM, masked LM, span corruption) on a list of tokens. Masks are boolean with
True where a query may look, the convention of `torch.nn.functional.scaled_dot_product_attention`.
"""

import math
import random

import torch

from llmlab.checks import CourseError, check_number, check_positive_int

# Attention itself is defined once, in notebook 03's module, where the course first meets it as a soft lookup.
from llmlab.sequences import attention as scaled_dot_product_attention  # noqa: F401  (re-exported for 05)

# --- attention ------------------------------------------------------------------------------------------


def causal_mask(n_new: int, n_past: int = 0) -> torch.Tensor:
    """(n_new, n_past + n_new) booleans: token i sees the n_past earlier tokens and the new ones up to itself."""
    check_positive_int("n_new", n_new, minimum=0, maximum=8192)
    check_positive_int("n_past", n_past, minimum=0, maximum=8192)
    return torch.ones(n_new, n_past + n_new, dtype=torch.bool).tril(diagonal=n_past)


# --- the three families: who may look at whom ---------------------------------------------------------


def encoder_mask(n: int) -> torch.Tensor:
    """Encoder-only (BERT): every token sees every token, both directions."""
    check_positive_int("n", n, minimum=0, maximum=8192)
    return torch.ones(n, n, dtype=torch.bool)


def decoder_mask(n: int) -> torch.Tensor:
    """Decoder-only (GPT): every token sees itself and the tokens before it."""
    return causal_mask(n)


def encoder_decoder_masks(n_source: int, n_target: int) -> dict[str, torch.Tensor]:
    """Encoder-decoder (T5): the encoder reads the source both ways; the decoder writes the target causally
    and, through cross-attention, every target token sees the whole source."""
    return {
        "encoder self-attention": encoder_mask(n_source),
        "decoder self-attention": decoder_mask(n_target),
        "cross-attention": torch.ones(n_target, n_source, dtype=torch.bool),
    }


def _prefix_lm_reference(n: int, prefix: int) -> torch.Tensor:
    mask = causal_mask(n)
    mask[:, :prefix] = True  # the prefix is visible to everyone ...
    mask[:prefix, prefix:] = False  # ... but a prefix token never sees the part that is generated
    return mask


def check_prefix_lm_mask(prefix_lm_mask) -> None:
    """The exercise of notebook 05: prefix_lm_mask(n, prefix) -> (n, n) bool tensor of a prefix LM."""
    try:
        cases = [(n, p) for n in (1, 4, 7) for p in range(n + 1)]
        for n, prefix in cases:
            got = prefix_lm_mask(n, prefix)
            expected = _prefix_lm_reference(n, prefix)
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                print(f"✗ prefix_lm_mask({n}, {prefix}) should be a tensor of shape {tuple(expected.shape)}, "
                      f"not {shape}.")
                return
            if got.dtype != torch.bool:
                print(f"✗ the mask should hold booleans (True = may look), not {got.dtype}.")
                return
            if not torch.equal(got, expected):
                row, col = (got != expected).nonzero()[0].tolist()
                print(f"✗ prefix_lm_mask({n}, {prefix}): token {row} looking at token {col} should be "
                      f"{bool(expected[row, col])}. Hint: inside the prefix everyone sees the whole prefix; "
                      "after it, the causal rule.")
                return
    except NotImplementedError:
        print("Not done yet: start from causal_mask(n), then let every row see the first `prefix` columns, "
              "and keep the prefix rows from looking past the prefix.")
        return
    except Exception as error:  # the learner's bug, in one line
        print(f"✗ your prefix_lm_mask raised {type(error).__name__}: {error}")
        return
    print(f"✓ prefix_lm_mask is right on all {len(cases)} cases (prefix 0 is a decoder, prefix n an encoder).")


# --- positions --------------------------------------------------------------------------------------------


def sinusoidal_positions(n_positions: int, dim: int) -> torch.Tensor:
    """The fixed positional encodings of "Attention Is All You Need" (2017), (n_positions, dim).

    Column 2i holds sin(pos / 10000^(2i/dim)) and column 2i+1 the cosine: a clock with dim/2 hands, fast
    to slow, so that every position gets a distinct pattern and a shift by k is the same rotation anywhere.
    """
    check_positive_int("n_positions", n_positions, minimum=0, maximum=10_000)
    if check_positive_int("dim", dim, maximum=2048) % 2:
        raise CourseError(f"dim must be even (sine and cosine pairs), not {dim}")
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    frequency = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.float()


# --- the parameter count of a GPT, from its shapes -------------------------------------------------------


def parameter_count(config) -> dict[str, int]:
    """Parameters of a GPT-2-style model per component, from its config alone (no model built).

    Per layer with biases: attention 4d² + 4d (query, key, value and output), MLP 8d² + 5d (d -> 4d -> d),
    two layer norms 4d: 12d² + 13d. The output layer reuses the token embeddings (weight tying): 0 extra.
    """
    d, layers, bias = config.n_embd, config.n_layer, config.bias
    norm = 2 * d if bias else d  # a layer norm has a scale and, with bias, a shift
    counts = {
        "token embeddings (tied with the output layer)": config.vocab_size * d,
        "position embeddings": config.block_size * d,
        "attention": layers * (4 * d * d + (4 * d if bias else 0)),
        "MLP": layers * (8 * d * d + (5 * d if bias else 0)),
        "layer norms": (2 * layers + 1) * norm,
    }
    counts["total"] = sum(counts.values())
    return counts


# --- the three objectives, on one sentence ---------------------------------------------------------------

MASK, SENTINEL = "[MASK]", "<extra_id_{}>"


def causal_lm_pairs(tokens: list[str]) -> list[tuple[list[str], str]]:
    """Causal LM (GPT): from every prefix, predict the next token. A sentence of n tokens is n - 1 lessons."""
    return [(tokens[:i], tokens[i]) for i in range(1, len(tokens))]


def masked_lm(tokens: list[str], vocabulary: list[str], rate: float = 0.15, seed: int = 0):
    """Masked LM (BERT): pick `rate` of the tokens to predict; of those, 80 % become [MASK], 10 % a random
    token, 10 % stay (so the model cannot tell which inputs are real). Returns (inputs, targets); a target
    is None where nothing is predicted."""
    if not isinstance(tokens, list) or not tokens:
        raise CourseError(f"tokens must be a non-empty list of tokens, not {tokens!r:.60}")
    check_number("rate", rate, minimum=0, maximum=1)
    if not isinstance(vocabulary, list) or not vocabulary:
        raise CourseError(f"vocabulary must be a non-empty list of tokens to draw from, not {vocabulary!r:.60}")
    rng = random.Random(seed)
    chosen = set(rng.sample(range(len(tokens)), max(1, round(rate * len(tokens)))))
    inputs, targets = [], []
    for i, token in enumerate(tokens):
        if i not in chosen:
            inputs.append(token)
            targets.append(None)
            continue
        draw = rng.random()
        inputs.append(MASK if draw < 0.8 else rng.choice(vocabulary) if draw < 0.9 else token)
        targets.append(token)
    return inputs, targets


def _random_split(rng: random.Random, total: int, parts: int) -> list[int]:
    """total as a sum of `parts` positive integers, uniformly among such splits."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def span_corruption(tokens: list[str], noise_density: float = 0.15, mean_span: float = 3.0, seed: int = 0):
    """Span corruption (T5): drop random spans, each replaced by a sentinel in the input; the target lists
    each sentinel followed by the tokens it hid. Returns (inputs, targets)."""
    if not isinstance(tokens, list) or len(tokens) < 2:
        raise CourseError(f"span corruption needs a list of at least two tokens, not {tokens!r:.60}")
    check_number("noise_density", noise_density, minimum=0, maximum=1)
    check_number("mean_span", mean_span, minimum=1)
    n = len(tokens)
    n_noise = min(max(1, round(n * noise_density)), n - 1)
    n_spans = max(1, min(round(n_noise / mean_span), n_noise, n - n_noise))
    rng = random.Random(seed)
    noise_lengths, kept_lengths = _random_split(rng, n_noise, n_spans), _random_split(rng, n - n_noise, n_spans)
    inputs, targets, start = [], [], 0
    for span, (kept, noise) in enumerate(zip(kept_lengths, noise_lengths)):  # as in T5: kept, hidden, kept, ...
        inputs += tokens[start:start + kept] + [SENTINEL.format(span)]
        targets += [SENTINEL.format(span)] + tokens[start + kept:start + kept + noise]
        start += kept + noise
    return inputs, targets + [SENTINEL.format(n_spans)]
