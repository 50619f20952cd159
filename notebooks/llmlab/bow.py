"""Bag-of-words and TF-IDF from scratch, a cosine-similarity search engine, and a logistic regression on bags.

The first stage of the course: text becomes a sparse matrix of counts, one row per document, one column per
word. `BagOfWords` and `TfidfBag` reproduce scikit-learn's `CountVectorizer` and `TfidfVectorizer` (same settings,
same numbers: tests/unit/test_bow.py checks it), so each formula can be read here in a few lines.
"""

import difflib
import re
import warnings
from collections import Counter

import numpy as np
import scipy.sparse as sp
import torch

from llmlab.checks import check_number, check_positive_int, check_text

# scikit-learn's default: runs of two or more word characters. One-letter words ("a", "I", the "r" of
# "how many r's") are dropped, which is one of the things a bag cannot see.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


def tokenize(text: str, *, lowercase: bool = True, token_pattern: str = TOKEN_PATTERN) -> list[str]:
    """The words of a text, in order: lowercase it, then keep every match of the pattern."""
    check_text("text", text, allow_empty=True)
    if lowercase:
        text = text.lower()
    return re.findall(token_pattern, text)


def word_ngrams(tokens: list[str], ngram_range: tuple[int, int] = (1, 1)) -> list[str]:
    """Every run of n consecutive tokens, for n in ngram_range, joined by a space ("dog bites")."""
    low, high = ngram_range
    if not 1 <= low <= high:
        raise ValueError(f"ngram_range must be (low, high) with 1 <= low <= high, not {ngram_range}")
    return [" ".join(tokens[i:i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]


def document_frequency(counts: sp.csr_matrix) -> np.ndarray:
    """How many documents (rows) contain each term (column) at least once."""
    return np.bincount(counts.indices, minlength=counts.shape[1])


class BagOfWords:
    """Documents -> a sparse matrix of word counts (like scikit-learn's CountVectorizer).

    fit() learns the vocabulary: every term of the training documents, minus those in fewer than min_df or
    more than max_df documents (an int is a number of documents, a float a fraction of them), keeping the
    max_features most frequent; columns are in alphabetical order. transform() counts, ignoring unknown terms.
    """

    def __init__(self, *, lowercase=True, token_pattern=TOKEN_PATTERN, ngram_range=(1, 1), min_df=1,
                 max_df=1.0, max_features=None, binary=False):
        if max_features is not None:
            check_positive_int("max_features", max_features)
        self.lowercase, self.token_pattern, self.ngram_range = lowercase, token_pattern, tuple(ngram_range)
        self.min_df, self.max_df, self.max_features, self.binary = min_df, max_df, max_features, binary
        self.vocabulary_: dict[str, int] = {}

    def analyze(self, text: str) -> list[str]:
        """The terms of one document: its tokens, or its n-grams."""
        tokens = tokenize(text, lowercase=self.lowercase, token_pattern=self.token_pattern)
        return tokens if self.ngram_range == (1, 1) else word_ngrams(tokens, self.ngram_range)

    def _count(self, documents, vocabulary: dict[str, int], *, grow: bool) -> sp.csr_matrix:
        """A CSR matrix built directly from its three arrays: column indices, their counts, row starts."""
        if isinstance(documents, str):
            raise TypeError("pass a list of documents, not one string (wrap it: [text])")
        indices, values, row_starts = [], [], [0]
        for document in documents:
            counts = Counter()
            for term in self.analyze(document):
                column = vocabulary.setdefault(term, len(vocabulary)) if grow else vocabulary.get(term)
                if column is not None:
                    counts[column] += 1
            indices += counts.keys()
            values += counts.values()
            row_starts.append(len(indices))
        matrix = sp.csr_matrix((np.array(values, dtype=np.int64), np.array(indices, dtype=np.int64),
                                np.array(row_starts, dtype=np.int64)), shape=(len(row_starts) - 1, len(vocabulary)))
        matrix.sort_indices()
        if self.binary:
            matrix.data[:] = 1
        return matrix

    def _document_limits(self, n_documents: int) -> tuple[float, float]:
        low = self.min_df if isinstance(self.min_df, (int, np.integer)) else self.min_df * n_documents
        high = self.max_df if isinstance(self.max_df, (int, np.integer)) else self.max_df * n_documents
        if high < low:
            raise ValueError(f"max_df={self.max_df} keeps fewer documents than min_df={self.min_df}")
        return low, high

    def fit_transform(self, documents) -> sp.csr_matrix:
        found: dict[str, int] = {}
        counts = self._count(documents, found, grow=True)
        terms = np.array(list(found), dtype=object)
        df = document_frequency(counts)
        low, high = self._document_limits(counts.shape[0])
        keep = np.flatnonzero((df >= low) & (df <= high))
        if self.max_features is not None and len(keep) > self.max_features:
            totals = np.asarray(counts[:, keep].sum(axis=0)).ravel()
            # most frequent first; ties broken alphabetically so the choice is repeatable
            order = sorted(range(len(keep)), key=lambda i: (-totals[i], terms[keep[i]]))
            keep = keep[order[:self.max_features]]
        if len(keep) == 0:
            raise ValueError("no terms are left: the documents are empty, or min_df/max_df removed every term")
        keep = keep[np.argsort(terms[keep])]  # columns in alphabetical order, as scikit-learn does
        self.vocabulary_ = {term: column for column, term in enumerate(terms[keep])}
        return counts[:, keep].tocsr()

    def fit(self, documents) -> "BagOfWords":
        self.fit_transform(documents)
        return self

    def transform(self, documents) -> sp.csr_matrix:
        if not self.vocabulary_:
            raise ValueError("fit the bag on some documents first")
        return self._count(documents, self.vocabulary_, grow=False)

    def feature_names(self) -> np.ndarray:
        """The term of each column."""
        return np.array(sorted(self.vocabulary_, key=self.vocabulary_.get), dtype=object)


def inverse_document_frequency(counts: sp.csr_matrix, *, smooth_idf: bool = True) -> np.ndarray:
    """idf(t) = ln(n / df(t)) + 1, where df(t) is how many of the n documents contain t.

    Rare terms get a high weight, terms in every document the least (1). smooth_idf adds one imaginary
    document that contains every term once: idf(t) = ln((1 + n) / (1 + df(t))) + 1, never a division by zero.
    """
    n, df = counts.shape[0], document_frequency(counts)
    if smooth_idf:
        n, df = n + 1, df + 1
    return np.log(n / df) + 1.0


def tfidf_weights(counts: sp.csr_matrix, idf: np.ndarray | None, *, sublinear_tf: bool = False,
                  norm: str | None = "l2") -> sp.csr_matrix:
    """tf(t, d) * idf(t) for every stored entry, then each row scaled to length 1 (norm "l2" or "l1").

    sublinear_tf replaces a count c by 1 + ln(c): the 10th "freedom" in a speech adds less than the 1st.
    """
    weights = counts.astype(np.float64).tocsr(copy=True)
    if sublinear_tf:
        weights.data = 1.0 + np.log(weights.data)
    if idf is not None:
        weights.data *= idf[weights.indices]
    if norm is not None:
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1', 'l2' or None, not {norm!r}")
        rows = np.repeat(np.arange(weights.shape[0]), np.diff(weights.indptr))
        size = weights.data ** 2 if norm == "l2" else np.abs(weights.data)
        lengths = np.bincount(rows, weights=size, minlength=weights.shape[0])
        lengths = np.sqrt(lengths) if norm == "l2" else lengths
        lengths[lengths == 0] = 1.0  # an empty row stays all zero
        weights.data /= lengths[rows]
    return weights


class TfidfBag(BagOfWords):
    """A BagOfWords whose counts are weighted by inverse document frequency (like TfidfVectorizer)."""

    def __init__(self, *, norm="l2", use_idf=True, smooth_idf=True, sublinear_tf=False, **bag_settings):
        super().__init__(**bag_settings)
        self.norm, self.use_idf, self.smooth_idf, self.sublinear_tf = norm, use_idf, smooth_idf, sublinear_tf
        self.idf_ = None

    def _weigh(self, counts):
        return tfidf_weights(counts, self.idf_ if self.use_idf else None, sublinear_tf=self.sublinear_tf,
                             norm=self.norm)

    def fit_transform(self, documents) -> sp.csr_matrix:
        counts = super().fit_transform(documents)
        self.idf_ = inverse_document_frequency(counts, smooth_idf=self.smooth_idf)
        return self._weigh(counts)

    def transform(self, documents) -> sp.csr_matrix:
        return self._weigh(super().transform(documents))


def cosine_similarities(query: sp.csr_matrix, documents: sp.csr_matrix) -> np.ndarray:
    """cos(q, d) = q·d / (|q| |d|) between one query row and every document row (0 for an empty row)."""
    dots = np.asarray((documents @ query.T).todense()).ravel()
    document_lengths = np.sqrt(np.asarray(documents.multiply(documents).sum(axis=1)).ravel())
    query_length = np.sqrt(query.multiply(query).sum())
    lengths = document_lengths * query_length
    return np.divide(dots, lengths, out=np.zeros_like(dots, dtype=np.float64), where=lengths > 0)


def search(query: str, bag: TfidfBag, index: sp.csr_matrix, titles: list[str], *, k: int = 5):
    """The k documents most similar to the query: a list of (title, cosine similarity), best first.

    An empty query, or one with no word the index knows, raises a ValueError that says so (with the closest
    known words, when there are some), since every similarity would be 0.
    """
    check_text("query", query, allow_empty=True)
    check_positive_int("k", k)
    terms = bag.analyze(query)
    if not terms:
        raise ValueError("type a few words to search for (words of two or more letters)")
    known = [t for t in terms if t in bag.vocabulary_]
    if not known:
        hints = {t: difflib.get_close_matches(t, bag.vocabulary_, n=3) for t in dict.fromkeys(terms)}
        hint = "; ".join(f"'{t}' -> {', '.join(m)}" for t, m in hints.items() if m)
        raise ValueError(f"none of the words {sorted(set(terms))} is in the index's vocabulary"
                         + (f"; close matches: {hint}" if hint else ""))
    scores = cosine_similarities(bag.transform([query]), index)
    best = np.argsort(-scores, kind="stable")[:k]
    return [(titles[i], float(scores[i])) for i in best]


def distinctive_terms(weights: sp.csr_matrix, groups, feature_names, *, k: int = 10) -> dict:
    """For each group of rows, the k terms with the highest mean TF-IDF weight in its rows: (term, weight)."""
    groups = np.asarray(groups)
    found = {}
    for group in dict.fromkeys(groups.tolist()):
        mean = np.asarray(weights[groups == group].mean(axis=0)).ravel()
        top = np.argsort(-mean, kind="stable")[:k]
        found[group] = [(str(feature_names[i]), float(mean[i])) for i in top]
    return found


def scipy_to_torch(matrix: sp.spmatrix, dtype=torch.float64) -> torch.Tensor:
    """A scipy sparse matrix as a torch sparse CSR tensor (the same three arrays)."""
    csr = sp.csr_matrix(matrix)
    csr.sort_indices()
    with warnings.catch_warnings():  # torch calls its CSR support "beta"; products with it are stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                       torch.from_numpy(csr.indices.astype(np.int64)),
                                       torch.from_numpy(csr.data).to(dtype), csr.shape, check_invariants=True)


class SparseProduct(torch.autograd.Function):
    """features @ weights for fixed sparse features. The backward pass needs features.T @ grad; it is given
    precomputed, since torch's own backward would transpose the sparse matrix again at every step."""

    @staticmethod
    def forward(ctx, weights, features, features_t):
        ctx.features_t = features_t
        return features @ weights

    @staticmethod
    def backward(ctx, grad):
        return ctx.features_t @ grad, None, None


class SparseLogisticRegression:
    """Logistic regression on sparse features, in torch, with scikit-learn's objective:

        mean over examples of -log p(label) + |w|^2 / (2 C n)      (the bias is not penalized)

    minimized with L-BFGS, as scikit-learn's default solver does, so the two find the same weights.
    """

    def __init__(self, C: float = 1.0, *, max_iter: int = 500, tolerance: float = 1e-8):
        check_number("C", C, minimum=0, strict_minimum=True)  # the inverse strength of the penalty
        check_positive_int("max_iter", max_iter)
        self.C, self.max_iter, self.tolerance = C, max_iter, tolerance
        self.coef_ = self.intercept_ = None
        self.losses: list[float] = []

    def fit(self, features: sp.spmatrix, labels) -> "SparseLogisticRegression":
        X, X_t = scipy_to_torch(features), scipy_to_torch(features.T)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.float64)
        n = y.shape[0]
        w = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=self.max_iter, history_size=20,
                                      tolerance_grad=self.tolerance, tolerance_change=1e-12,
                                      line_search_fn="strong_wolfe")
        self.losses = []

        def objective():
            optimizer.zero_grad()
            logits = SparseProduct.apply(w.unsqueeze(1), X, X_t).squeeze(1) + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + w.dot(w) / (2 * self.C * n)
            loss.backward()
            self.losses.append(loss.item())
            return loss

        # Each product takes milliseconds: splitting it across threads costs more than it saves (10x slower on a
        # busy 2-core machine), so the fit runs on one thread.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            optimizer.step(objective)
        finally:
            torch.set_num_threads(threads)
        self.coef_, self.intercept_ = w.detach().numpy().copy(), float(b.detach())
        return self

    def decision_function(self, features: sp.spmatrix) -> np.ndarray:
        return np.asarray(features @ self.coef_).ravel() + self.intercept_

    def predict_proba(self, features: sp.spmatrix) -> np.ndarray:
        """P(label = 1) for each row."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(features)))

    def predict(self, features: sp.spmatrix) -> np.ndarray:
        return (self.decision_function(features) > 0).astype(np.int64)

    def accuracy(self, features: sp.spmatrix, labels) -> float:
        return float(np.mean(self.predict(features) == np.asarray(labels)))


def train_test_split_indices(n: int, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of range(n) into (train, test) indices."""
    check_positive_int("n", n, minimum=0)
    check_number("test_fraction", test_fraction, minimum=0, maximum=1)
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def accuracy_and_standard_error(correct) -> tuple[float, float]:
    """The share of right answers, and its standard error sqrt(p (1 - p) / n): how much it would move on another
    test set of the same size."""
    correct = np.asarray(correct, dtype=np.float64)
    p = correct.mean()
    return float(p), float(np.sqrt(p * (1 - p) / len(correct)))


def paired_difference(correct_a, correct_b) -> tuple[float, float]:
    """Accuracy of A minus accuracy of B on the same examples, and the standard error of that difference.

    Paired: the per-example differences (+1, 0 or -1) are averaged, so the examples both get right or both get
    wrong cancel out, and the error bar is much smaller than that of two independent accuracies.
    """
    difference = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))


def check_char_ngrams(fn) -> bool:
    """Checker for the exercise: fn(text, n) -> the character n-grams of a text, in order.

    Compared with scikit-learn's analyzer="char" (lowercased, runs of white space read as one space).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    cases = [("strawberry", 1), ("strawberry", 2), ("Strawberry", 3), ("dog bites man", 2),
             ("How many  r's in strawberry?", 3), ("ab", 3)]
    try:
        for text, n in cases:
            expected = CountVectorizer(analyzer="char", ngram_range=(n, n)).build_analyzer()(text)
            got = list(fn(text, n))
            if got != expected:
                print(f"✗ char_ngrams({text!r}, {n}): expected {expected[:8]}{' ...' if len(expected) > 8 else ''}"
                      f", got {got[:8]}{' ...' if len(got) > 8 else ''}")
                return False
    except NotImplementedError:
        print("Not done yet. Hint: scikit-learn lowercases first and reads a run of two or more white-space "
              "characters as one space; how many n-grams does a text of L characters have?")
        return False
    print("✓ your character n-grams match scikit-learn's analyzer='char'")
    return True
