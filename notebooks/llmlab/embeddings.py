"""Word embeddings: word2vec (skip-gram with negative sampling) and doc2vec (PV-DBOW), written in torch.

The data flow of this stage:
  text -> words -> a Vocabulary (counts) -> subsampled ids -> (center, context) pairs + noise words
       -> SkipGram model (two embedding tables) trained on the SGNS loss -> WordVectors (neighbours, analogies)
PV-DBOW is the same model with one row per *document* in the center table: a document's vector is trained to
predict the words in it, so documents that use words alike end up close.

References: Mikolov et al. (2013), *Distributed Representations of Words and Phrases and their
Compositionality* (negative sampling, subsampling, unigram^0.75 noise); Le & Mikolov (2014), *Distributed
Representations of Sentences and Documents* (PV-DBOW).
"""

import difflib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from llmlab.progress import progress_bar as tqdm  # a widget live, a final text line in saved notebooks

from llmlab import artifacts, corpora
from llmlab.checks import NOT_DONE, CourseError, check_number, check_positive_int, check_text, learner_call

# Lowercase words, keeping one inner apostrophe ("didn't", "o'er") so contractions stay one word.
WORD_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words_of(text: str) -> list[str]:
    check_text("text", text, allow_empty=True)
    return WORD_PATTERN.findall(text.lower().replace("\u2019", "'"))  # curly apostrophes too: "didn’t"


# ---------------------------------------------------------------------------------------------------------
# The corpus and its vocabulary
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Document:
    source: str  # "tinystories", "shakespeare" or "speeches"
    words: list[str]


def course_documents(fraction: float = 1.0) -> list[Document]:
    """The course corpora as documents of words: TinyStories stories, Shakespeare's speeches, US speeches.

    The stories are the validation sample and the 2 MiB head of the train split (a word needs to be seen in more
    than one story before its vector says more than that story). Windows never cross a document boundary.
    `fraction` keeps the first part of each corpus (fast mode).
    """
    stories = corpora.tinystories() + corpora.tinystories_train()
    scenes = [s for s in re.split(r"\n\s*\n", corpora.shakespeare()) if s.strip()]
    addresses = [s.text for s in corpora.speeches()]
    documents = []
    for source, texts in (("tinystories", stories), ("shakespeare", scenes), ("speeches", addresses)):
        keep = max(1, round(len(texts) * fraction))
        documents += [Document(source, words_of(t)) for t in texts[:keep]]
    return [d for d in documents if d.words]


@dataclass
class Vocabulary:
    """Words seen at least min_count times, most frequent first (ties alphabetical, so it is deterministic)."""

    words: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, words: list[str]) -> np.ndarray:
        """Ids of the known words (unknown ones are dropped, as word2vec does)."""
        return np.array([self.index[w] for w in words if w in self.index], dtype=np.int64)


def build_vocabulary(documents: list[Document], min_count: int) -> Vocabulary:
    counts: dict[str, int] = {}
    for doc in documents:
        for w in doc.words:
            counts[w] = counts.get(w, 0) + 1
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return Vocabulary(kept, np.array([counts[w] for w in kept], dtype=np.int64))


def keep_probability(counts: np.ndarray, threshold: float) -> np.ndarray:
    """Subsampling of frequent words (word2vec.c's formula): keep a word of frequency f with probability
    (sqrt(f/t) + 1) * t/f, capped at 1. Words rarer than t are always kept; "the" is mostly dropped, which
    speeds training up and stops "the" from being everyone's neighbour."""
    frequency = counts / counts.sum()
    return np.minimum(1.0, (np.sqrt(frequency / threshold) + 1) * threshold / frequency)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> torch.Tensor:
    """The distribution negative samples are drawn from: unigram^0.75, which gives rare words more chances
    than their raw frequency would."""
    weights = torch.as_tensor(counts, dtype=torch.float64) ** power
    return (weights / weights.sum()).float()


def sample_noise(noise: torch.Tensor, shape, generator: torch.Generator) -> torch.Tensor:
    """Draw ids from `noise` by inverting its cumulative distribution (faster than multinomial for big draws)."""
    cdf = torch.cumsum(noise.double(), 0)
    u = torch.rand(shape, generator=generator, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, u).clamp_(max=len(noise) - 1)


def skipgram_pairs(ids: torch.Tensor, doc_ids: torch.Tensor, window: int, generator: torch.Generator):
    """All (center, context) pairs of a stream of word ids, in random order.

    As in word2vec, each center draws its own radius in 1..window, so near words are paired more often than
    far ones. Pairs whose words lie in different documents are dropped.
    """
    n = len(ids)
    radius = torch.randint(1, window + 1, (n,), generator=generator)
    centers, contexts = [], []
    for d in range(1, min(window, n - 1) + 1):
        same_doc = doc_ids[:-d] == doc_ids[d:]
        right = same_doc & (radius[:-d] >= d)  # center i, context i + d
        left = same_doc & (radius[d:] >= d)  # center i + d, context i
        centers += [ids[:-d][right], ids[d:][left]]
        contexts += [ids[d:][right], ids[:-d][left]]
    centers, contexts = torch.cat(centers), torch.cat(contexts)
    order = torch.randperm(len(centers), generator=generator)
    return centers[order], contexts[order]


# ---------------------------------------------------------------------------------------------------------
# The model and its loss
# ---------------------------------------------------------------------------------------------------------

def sgns_loss(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Skip-gram negative-sampling loss, averaged over the batch.

    center (B, d): v_c, the input vector of each center word; context (B, d): u_o, the output vector of the
    word really seen next to it; negatives (B, K, d): u_k, output vectors of K noise words.
        loss = -log σ(u_o·v_c) - Σ_k log σ(-u_k·v_c)
    i.e. logistic regression that tells the real neighbour (label 1) from noise words (label 0).
    """
    positive = (center * context).sum(-1)
    negative = torch.einsum("bd,bkd->bk", center, negatives)
    return -(F.logsigmoid(positive) + F.logsigmoid(-negative).sum(-1)).mean()


def sgns_gradients(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor):
    """The gradients of sgns_loss, derived by hand (σ' = σ(1-σ) gives d/dx log σ(x) = 1 - σ(x)):

        dL/dv_c = (σ(u_o·v_c) - 1) u_o + Σ_k σ(u_k·v_c) u_k
        dL/du_o = (σ(u_o·v_c) - 1) v_c
        dL/du_k = σ(u_k·v_c) v_c
    each divided by B because the loss is a batch mean. Returns (d_center, d_context, d_negatives).
    """
    batch = center.shape[0]
    pos_error = torch.sigmoid((center * context).sum(-1)) - 1  # (B,): how far from "yes, neighbour"
    neg_error = torch.sigmoid(torch.einsum("bd,bkd->bk", center, negatives))  # (B, K): how far from "no"
    d_center = pos_error[:, None] * context + torch.einsum("bk,bkd->bd", neg_error, negatives)
    d_context = pos_error[:, None] * center
    d_negatives = neg_error[:, :, None] * center[:, None, :]
    return d_center / batch, d_context / batch, d_negatives / batch


class SkipGram(nn.Module):
    """Two embedding tables: `center` (what we keep as word vectors) and `context` (used to score neighbours).

    For PV-DBOW the center table has one row per document instead of per word.
    """

    def __init__(self, n_centers: int, n_contexts: int, dim: int):
        super().__init__()
        self.center = nn.Embedding(n_centers, dim)
        self.context = nn.Embedding(n_contexts, dim)
        # word2vec.c's initialisation: small random inputs, zero outputs (the first steps move outputs only).
        nn.init.uniform_(self.center.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)

    def forward(self, centers, contexts, negatives):
        return sgns_loss(self.center(centers), self.context(contexts), self.context(negatives))


def train_sgns(model: SkipGram, make_pairs, noise: torch.Tensor, *, epochs: int, batch_size: int,
               negatives: int, lr: float, generator: torch.Generator, on_loss=None, log_every: int = 50,
               desc: str = "training"):
    """Train `model` with Adam on the SGNS loss; the learning rate decays linearly to 0, as in word2vec.

    make_pairs(generator) -> (centers, contexts) gives one epoch of pairs (fresh subsampling each epoch).
    on_loss(pairs_seen, loss) is called every log_every steps with the mean loss since the last call.
    Returns the history [(pairs_seen, loss), ...].
    """
    # Adam, not word2vec's plain SGD: in a big batch a frequent noise word ("the") gets hundreds of updates
    # at once; in our runs SGD at word2vec's rate then collapsed all vectors onto one direction. Adam's
    # per-weight step size absorbs it.
    # fused=True runs the update of the whole tables as one kernel, about twice as fast on a CPU.
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    history, seen, running, count = [], 0, 0.0, 0
    planned = None
    bar = None
    for _ in range(epochs):
        centers, contexts = make_pairs(generator)
        if planned is None:  # epochs differ a little in size (random subsampling); plan with the first
            planned = len(centers) * epochs
            bar = tqdm(total=planned, desc=desc, unit="pair", unit_scale=True)
        for start in range(0, len(centers), batch_size):
            c, o = centers[start:start + batch_size], contexts[start:start + batch_size]
            noise_ids = sample_noise(noise, (len(c), negatives), generator)
            for group in optimizer.param_groups:
                group["lr"] = lr * max(1e-3, 1 - seen / planned)
            loss = model(c, o, noise_ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(c)
            running, count = running + loss.item(), count + 1
            bar.update(len(c))
            if count == log_every:
                history.append((seen, running / count))
                if on_loss:
                    on_loss(seen, running / count)
                running, count = 0.0, 0
    if count:
        history.append((seen, running / count))
        if on_loss:
            on_loss(seen, running / count)
    bar.close()
    return history


# ---------------------------------------------------------------------------------------------------------
# Word2vec end to end, as a named artifact
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Word2VecConfig:
    dim: int = 100
    window: int = 5
    negatives: int = 5
    min_count: int = 5
    subsample: float = 1e-4
    noise_power: float = 0.75
    epochs: int = 8
    batch_size: int = 4096
    lr: float = 0.01
    corpus_fraction: float = 1.0
    seed: int = 1337

    def __post_init__(self):
        _check_sgns_settings(self)
        check_positive_int("window", self.window, maximum=100)
        check_positive_int("min_count", self.min_count)
        check_number("noise_power", self.noise_power, minimum=0, maximum=1)
        check_number("corpus_fraction", self.corpus_fraction, minimum=0, strict_minimum=True, maximum=1)


def _check_sgns_settings(config) -> None:
    """The settings word2vec and doc2vec share, checked where a config is made (a bad one fails at once)."""
    check_positive_int("dim", config.dim, maximum=4096)
    check_positive_int("negatives", config.negatives, maximum=1000)
    check_number("subsample", config.subsample, minimum=0, strict_minimum=True, maximum=1)
    check_positive_int("epochs", config.epochs, maximum=1000)
    check_positive_int("batch_size", config.batch_size, maximum=1 << 20)
    check_number("lr", config.lr, minimum=0, strict_minimum=True, maximum=10)


def _stream(documents: list[Document], vocab: Vocabulary):
    """All documents' ids in one stream, with the document each id came from."""
    ids = [vocab.ids(d.words) for d in documents]
    doc_ids = [np.full(len(x), i, dtype=np.int64) for i, x in enumerate(ids)]
    return torch.from_numpy(np.concatenate(ids)), torch.from_numpy(np.concatenate(doc_ids))


def train_word2vec(documents: list[Document], config: Word2VecConfig, on_loss=None):
    """Train skip-gram with negative sampling. Returns (WordVectors, vocabulary, history, model)."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    vocab = build_vocabulary(documents, config.min_count)
    ids, doc_ids = _stream(documents, vocab)
    keep = torch.from_numpy(keep_probability(vocab.counts, config.subsample)).float()

    def make_pairs(g):
        kept = torch.rand(len(ids), generator=g) < keep[ids]  # subsample before windowing, as word2vec does
        return skipgram_pairs(ids[kept], doc_ids[kept], config.window, g)

    model = SkipGram(len(vocab), len(vocab), config.dim)
    history = train_sgns(model, make_pairs, noise_distribution(vocab.counts, config.noise_power),
                         epochs=config.epochs, batch_size=config.batch_size, negatives=config.negatives,
                         lr=config.lr, generator=generator, on_loss=on_loss, desc="word2vec")
    vectors = WordVectors(vocab.words, model.center.weight.detach().clone())
    return vectors, vocab, history, model


@dataclass
class TrainedWord2Vec:
    vectors: "WordVectors"
    vocab: Vocabulary
    history: list  # [(pairs_seen, loss)]
    train_seconds: float
    n_tokens: int


def word2vec(config: Word2VecConfig, on_loss=None) -> TrainedWord2Vec:
    """The course's word2vec, as the named artifact "word2vec": trained once, then loaded from the cache."""
    from safetensors.torch import load_file, save_file

    def build(folder: Path):
        documents = course_documents(config.corpus_fraction)
        start = time.perf_counter()
        vectors, vocab, history, model = train_word2vec(documents, config, on_loss=on_loss)
        seconds = time.perf_counter() - start
        save_file({"center": model.center.weight.detach().contiguous(),
                   "context": model.context.weight.detach().contiguous()}, folder / "vectors.safetensors")
        (folder / "vocab.json").write_text(json.dumps({"words": vocab.words, "counts": vocab.counts.tolist()}))
        (folder / "training.json").write_text(json.dumps(
            {"history": history, "train_seconds": seconds, "n_tokens": sum(len(d.words) for d in documents)}))

    def load(folder: Path) -> TrainedWord2Vec:
        tensors = load_file(folder / "vectors.safetensors")
        v = json.loads((folder / "vocab.json").read_text())
        t = json.loads((folder / "training.json").read_text())
        vocab = Vocabulary(v["words"], np.array(v["counts"], dtype=np.int64))
        return TrainedWord2Vec(WordVectors(vocab.words, tensors["center"]), vocab,
                               [tuple(h) for h in t["history"]], t["train_seconds"], t["n_tokens"])

    return artifacts.cached("word2vec", build=build, load=load, config=asdict(config))


# ---------------------------------------------------------------------------------------------------------
# Using the vectors: neighbours, analogies
# ---------------------------------------------------------------------------------------------------------

def unknown_word_message(word: str, words: list[str]) -> str:
    close = difflib.get_close_matches(word, words, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "no close matches in the vocabulary"
    return f"unknown word {word!r}; {hint}"


class WordVectors:
    """Unit-length word vectors, so a dot product is a cosine similarity."""

    def __init__(self, words: list[str], vectors: torch.Tensor):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.unit = F.normalize(vectors.float(), dim=1)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def id(self, word: str) -> int:
        word = check_text("word", word).strip().lower()
        if word not in self.index:
            raise KeyError(unknown_word_message(word, self.words))
        return self.index[word]

    def vector(self, word: str) -> torch.Tensor:
        return self.unit[self.id(word)]

    def similarity(self, a: str, b: str) -> float:
        return float(self.vector(a) @ self.vector(b))

    def nearest(self, query: torch.Tensor, k: int = 10, exclude=()) -> list[tuple[str, float]]:
        check_positive_int("k", k)
        if not isinstance(query, torch.Tensor) or query.shape != self.unit.shape[1:]:
            raise CourseError(f"query must be one vector of {self.unit.shape[1]} numbers (a tensor), "
                              f"not {type(query).__name__} {getattr(query, 'shape', '')}")
        scores = self.unit @ F.normalize(query.float(), dim=0)
        for word in exclude:
            scores[self.id(word)] = -float("inf")
        top = torch.topk(scores, min(k, len(self.words) - len(set(exclude))))
        return [(self.words[i], float(s)) for s, i in zip(top.values, top.indices)]

    def neighbours(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        return self.nearest(self.vector(word), k, exclude=[word])

    def combine(self, positive: list[str], negative: list[str], k: int = 5) -> list[tuple[str, float]]:
        """Words nearest to sum(positive) - sum(negative) (3CosAdd), leaving out the words asked about."""
        query = torch.zeros(self.unit.shape[1])
        for word in positive:
            query += self.vector(word)
        for word in negative:
            query -= self.vector(word)
        return self.nearest(query, k, exclude=positive + negative)

    def analogy(self, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
        """a is to b as c is to ?  (b - a + c: man is to king as woman is to ... queen?)"""
        return self.combine([b, c], [a], k)

    def rank(self, query: torch.Tensor, word: str, exclude=()) -> int:
        """Where `word` comes (1 = first) among all words ordered by similarity to query."""
        scores = self.unit @ F.normalize(query.float(), dim=0)
        for w in exclude:
            scores[self.id(w)] = -float("inf")
        return int((scores > scores[self.id(word)]).sum()) + 1


def parse_expression(text: str) -> tuple[list[str], list[str]]:
    """'king - man + woman' -> (['king', 'woman'], ['man']). A single word is just (['word'], [])."""
    check_text("expression", text, allow_empty=True)
    tokens = re.findall(r"[+-]|[a-z]+(?:'[a-z]+)?", text.lower())
    if not tokens:
        raise ValueError("type a word, or an expression such as: king - man + woman")
    positive, negative, sign = [], [], "+"
    for token in tokens:
        if token in "+-":
            sign = token
        else:
            (positive if sign == "+" else negative).append(token)
            sign = "+"
    if not positive:
        raise ValueError("an expression needs at least one word with a + sign, e.g. king - man + woman")
    return positive, negative


def explore(vectors: WordVectors, expression: str, k: int = 8) -> str:
    """The widget's answer: neighbours of a word, or the words nearest to an expression like king - man + woman."""
    check_positive_int("k", k, maximum=1000)
    positive, negative = parse_expression(expression)
    for w in positive + negative:
        vectors.id(w)  # raises KeyError with close matches
    if len(positive) == 1 and not negative:
        found, title = vectors.neighbours(positive[0], k), f"nearest neighbours of {positive[0]!r}"
    else:
        found, title = vectors.combine(positive, negative, k), f"nearest to {expression.strip()!r}"
    rows = "\n".join(f"  {word:<15} {score:+.3f}" for word, score in found)
    return f"{title} (cosine similarity):\n{rows}"


# ---------------------------------------------------------------------------------------------------------
# Did the vectors learn something? Related pairs vs random pairs, and analogies
# ---------------------------------------------------------------------------------------------------------

# Pairs a reader would call related, chosen among words all three corpora make frequent enough.
RELATED_PAIRS = [
    ("king", "queen"), ("man", "woman"), ("boy", "girl"), ("mother", "father"), ("mom", "dad"),
    ("brother", "sister"), ("son", "daughter"), ("husband", "wife"), ("he", "she"), ("his", "her"),
    ("lord", "lady"), ("prince", "princess"), ("day", "night"), ("happy", "sad"), ("big", "small"),
    ("good", "bad"), ("dog", "cat"), ("red", "blue"), ("war", "peace"), ("france", "england"),
    ("one", "two"), ("three", "four"), ("north", "south"), ("east", "west"), ("sun", "moon"),
    ("apple", "banana"), ("cake", "cookie"), ("congress", "senate"), ("tax", "taxes"), ("ran", "walked"),
    ("smiled", "laughed"), ("tree", "flower"), ("soldiers", "army"), ("river", "sea"), ("gold", "silver"),
]

# (a, b, c, expected): a is to b as c is to expected.
ANALOGIES = [
    ("man", "king", "woman", "queen"),
    ("man", "woman", "boy", "girl"),
    ("brother", "sister", "son", "daughter"),
    ("father", "mother", "husband", "wife"),
    ("he", "she", "his", "her"),
    ("king", "queen", "prince", "princess"),
    ("lord", "lady", "duke", "duchess"),
    ("man", "men", "woman", "women"),
    ("boy", "boys", "girl", "girls"),
    ("dog", "dogs", "cat", "cats"),
    ("big", "bigger", "small", "smaller"),
    ("good", "better", "bad", "worse"),
    ("go", "went", "see", "saw"),
    ("is", "was", "are", "were"),
    ("walk", "walked", "play", "played"),
    ("dad", "mom", "father", "mother"),
    ("france", "french", "america", "american"),
    ("day", "night", "sun", "moon"),
]


@dataclass(frozen=True)
class Margin:
    related: float  # mean cosine of the related pairs
    random: float  # mean cosine of random pairs of vocabulary words
    n_related: int
    n_random: int
    related_scores: list
    random_scores: list

    @property
    def margin(self) -> float:
        return self.related - self.random


def similarity_margin(vectors: WordVectors, pairs=RELATED_PAIRS, n_random: int = 2000, seed: int = 0) -> Margin:
    """Mean cosine of related pairs minus mean cosine of random pairs (same seed, same random pairs).

    Pairs with a word outside the vocabulary are left out (n_related says how many were scored).
    """
    related = [vectors.similarity(a, b) for a, b in pairs if a in vectors and b in vectors]
    if not related:
        raise ValueError("none of the related pairs is in the vocabulary")
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(len(vectors), (2, n_random), generator=g)
    a, b = a[a != b], b[a != b]
    random = (vectors.unit[a] * vectors.unit[b]).sum(-1).tolist()
    return Margin(float(np.mean(related)), float(np.mean(random)), len(related), len(random), related, random)


@dataclass(frozen=True)
class AnalogyResult:
    question: tuple  # (a, b, c, expected)
    answer: str | None  # the top word, None when a word is not in the vocabulary
    rank: int | None  # where the expected word came

    @property
    def correct(self) -> bool:
        return self.answer == self.question[3]


def evaluate_analogies(vectors: WordVectors, analogies=ANALOGIES) -> list[AnalogyResult]:
    results = []
    for a, b, c, expected in analogies:
        if not all(w in vectors for w in (a, b, c, expected)):
            results.append(AnalogyResult((a, b, c, expected), None, None))
            continue
        query = vectors.vector(b) - vectors.vector(a) + vectors.vector(c)
        answer = vectors.analogy(a, b, c, k=1)[0][0]
        results.append(AnalogyResult((a, b, c, expected), answer, vectors.rank(query, expected, [a, b, c])))
    return results


def analogy_accuracy(results: list[AnalogyResult]) -> float:
    """Top-1 accuracy over all questions; a question with an unknown word counts as wrong."""
    return sum(r.correct for r in results) / len(results)


# ---------------------------------------------------------------------------------------------------------
# Probes: what can a linear read-out find in a vector? And vectors built from letters (fastText's idea)
# ---------------------------------------------------------------------------------------------------------

def probe_accuracy(features: np.ndarray, labels, *, strengths=(0.01, 0.1, 1.0, 10.0, 100.0), folds: int = 5) -> float:
    """Held-out accuracy of a linear probe: logistic regression, its C chosen by an inner cross-validation on the
    training folds only, scored on `folds` outer folds of words it was not trained on."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_val_score

    probe = GridSearchCV(LogisticRegression(max_iter=3000), {"C": list(strengths)}, cv=3)
    return float(cross_val_score(probe, np.asarray(features), np.asarray(labels), cv=folds).mean())


def subword_ngrams(word: str, n_range: tuple[int, int] = (1, 5)) -> list[str]:
    """fastText's units of a word: its character n-grams, with < and > marking the start and the end
    ("<st", "ry>"); n from 1 keeps the single letters too."""
    marked = f"<{word}>"
    grams = [marked[i:i + n] for n in range(n_range[0], n_range[1] + 1) for i in range(len(marked) - n + 1)]
    return [g for g in grams if g not in ("<", ">")]  # the marks alone say nothing


def subword_vectors(words: list[str], dim: int, *, n_range: tuple[int, int] = (1, 5), seed: int = 0) -> np.ndarray:
    """Unit vectors built from spelling alone: each character n-gram gets a random vector (untrained), and a word's
    vector is the mean of its n-grams' vectors, as fastText builds them (fastText then trains the n-gram vectors)."""
    rng = np.random.default_rng(seed)
    table: dict[str, np.ndarray] = {}
    rows = []
    for word in words:
        grams = subword_ngrams(word, n_range)
        for gram in grams:
            if gram not in table:
                table[gram] = rng.standard_normal(dim)
        rows.append(np.mean([table[g] for g in grams], axis=0))
    rows = np.array(rows)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# doc2vec (PV-DBOW): a vector per speech
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Doc2VecConfig:
    dim: int = 50
    negatives: int = 5
    subsample: float = 1e-4
    epochs: int = 10
    batch_size: int = 4096
    lr: float = 0.01
    seed: int = 1337

    def __post_init__(self):
        _check_sgns_settings(self)


def train_doc2vec(texts: list[str], vocab: Vocabulary, config: Doc2VecConfig, on_loss=None):
    """PV-DBOW: each document's vector is trained to tell the words it contains from noise words.

    Uses the word2vec vocabulary (and its counts for subsampling and noise). Returns (doc vectors (N, d),
    history).
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    ids = [torch.from_numpy(vocab.ids(words_of(t))) for t in texts]
    words = torch.cat(ids)
    docs = torch.cat([torch.full((len(x),), i) for i, x in enumerate(ids)])
    keep = torch.from_numpy(keep_probability(vocab.counts, config.subsample)).float()

    def make_pairs(g):
        kept = torch.rand(len(words), generator=g) < keep[words]
        order = torch.randperm(int(kept.sum()), generator=g)
        return docs[kept][order], words[kept][order]

    model = SkipGram(len(texts), len(vocab), config.dim)
    history = train_sgns(model, make_pairs, noise_distribution(vocab.counts), epochs=config.epochs,
                         batch_size=config.batch_size, negatives=config.negatives, lr=config.lr,
                         generator=generator, on_loss=on_loss, log_every=20, desc="doc2vec")
    return model.center.weight.detach().clone(), history


def nearest_neighbour_gaps(vectors: torch.Tensor, values) -> tuple[np.ndarray, np.ndarray]:
    """For each row, |value - value of its nearest other row| (cosine), and the same over all other rows.

    With values = years: do speeches sit next to speeches of their own era?
    """
    unit = F.normalize(vectors.float(), dim=1)
    scores = unit @ unit.T
    scores.fill_diagonal_(-float("inf"))
    values = np.asarray(values, dtype=float)
    nearest = scores.argmax(1).numpy()
    gaps = np.abs(values - values[nearest])
    all_gaps = np.abs(values[:, None] - values[None, :])[~np.eye(len(values), dtype=bool)]
    return gaps, all_gaps


# ---------------------------------------------------------------------------------------------------------
# Exercise: the gradient of the SGNS loss with respect to the center vector
# ---------------------------------------------------------------------------------------------------------

def check_center_gradient(center_gradient) -> bool:
    """Check the learner's center_gradient(center, context, negatives) -> dL/d(center) against autograd."""
    g = torch.Generator().manual_seed(0)
    center, context = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    negatives = torch.randn(4, 3, 6, generator=g)
    mine = learner_call(center_gradient, center, context, negatives, name="your center_gradient", not_done=(
        "Not done yet: fill in center_gradient. Hint: d/dx log σ(x) = 1 - σ(x), and the loss is a mean "
        "over the batch, so divide by B."))
    if mine is NOT_DONE:
        return False
    leaf = center.clone().requires_grad_(True)
    sgns_loss(leaf, context, negatives).backward()
    if not isinstance(mine, torch.Tensor) or mine.shape != leaf.grad.shape:
        shape = tuple(mine.shape) if isinstance(mine, torch.Tensor) else type(mine).__name__
        print(f"✗ expected a tensor of shape {tuple(leaf.grad.shape)} (one gradient row per center), got {shape}")
        return False
    if torch.allclose(mine, leaf.grad, atol=1e-6, rtol=1e-4):
        print("✓ your gradient equals torch autograd's.")
        return True
    ratio = float((mine * leaf.grad).sum() / (leaf.grad * leaf.grad).sum())
    hint = f" It looks scaled by {ratio:.2f}: is the 1/B of the mean there?" if abs(ratio - 1) > 0.05 else ""
    print(f"✗ not the gradient autograd finds (largest difference {float((mine - leaf.grad).abs().max()):.3g})."
          + hint + " Remember the noise words' term: + Σ_k σ(u_k·v_c) u_k.")
    return False
