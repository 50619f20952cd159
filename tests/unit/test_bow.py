"""Bag-of-words and TF-IDF from scratch, checked against scikit-learn on real text."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import cosine_similarity
from threadpoolctl import threadpool_limits

from llmlab import bow, corpora

HAND_MADE = ["The dog bites the man.", "The man bites the dog!", "A dog, a man: a bite?", "Ünïcode wörds, 2024 too",
             "", "dog dog dog dog"]


@pytest.fixture(scope="module")
def speeches():
    found = corpora.speeches()
    return [s.text for s in found[::6]], [s.text for s in found[1::15]]  # train, unseen


@pytest.fixture(scope="module")
def sentences():
    texts, labels = corpora.polarity_sentences()
    return texts[:1500], np.array(labels[:1500])


def assert_same_matrix(ours, theirs):
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=0, atol=1e-12)


def test_tokenize_matches_scikit_learn_analyzer():
    analyzer = CountVectorizer().build_analyzer()
    for text in HAND_MADE + ["How many r's are in the word \"strawberry\"?"]:
        assert bow.tokenize(text) == analyzer(text)
    assert bow.tokenize("How many r's in strawberry?") == ["how", "many", "in", "strawberry"]  # "r" is lost


def test_word_ngrams_match_scikit_learn():
    analyzer = CountVectorizer(ngram_range=(1, 3)).build_analyzer()
    tokens = bow.tokenize("the dog bites the man")
    assert sorted(bow.word_ngrams(tokens, (1, 3))) == sorted(analyzer("the dog bites the man"))
    with pytest.raises(ValueError, match="ngram_range"):
        bow.word_ngrams(tokens, (2, 1))


SETTINGS = [
    {},
    {"min_df": 2},
    {"min_df": 0.1, "max_df": 0.9},
    {"max_df": 5},
    {"ngram_range": (1, 2), "min_df": 2},
    {"binary": True},
    {"lowercase": False},
    {"token_pattern": r"(?u)\b\w+\b"},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_counts_match_count_vectorizer(settings, speeches):
    train, unseen = speeches
    ours, theirs = bow.BagOfWords(**settings), CountVectorizer(**settings)
    assert_same_matrix(ours.fit_transform(train), theirs.fit_transform(train))
    assert ours.vocabulary_ == theirs.vocabulary_
    assert list(ours.feature_names()) == list(theirs.get_feature_names_out())
    assert_same_matrix(ours.transform(unseen), theirs.transform(unseen))


def test_max_features_keeps_the_most_frequent_terms(speeches):
    train, _ = speeches
    ours, theirs = bow.BagOfWords(max_features=300), CountVectorizer(max_features=300)
    counts = ours.fit_transform(train)
    reference = theirs.fit_transform(train)
    # scikit-learn breaks ties at the cut with an unstable sort; compare only terms clearly above the cut
    totals = dict(zip(theirs.get_feature_names_out(), np.asarray(reference.sum(axis=0)).ravel()))
    cut = min(totals.values())
    clear = {t for t, total in totals.items() if total > cut}
    assert clear <= set(ours.vocabulary_)
    assert len(ours.vocabulary_) == 300 and counts.shape == (len(train), 300)


TFIDF_SETTINGS = [
    dict(zip(("smooth_idf", "sublinear_tf", "norm", "min_df"), values))
    for values in itertools.product([True, False], [False, True], ["l2", "l1", None], [1, 3])
] + [{"use_idf": False}, {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}]


@pytest.mark.parametrize("settings", TFIDF_SETTINGS, ids=str)
def test_tfidf_matches_tfidf_vectorizer(settings, speeches):
    train, unseen = speeches
    ours, theirs = bow.TfidfBag(**settings), TfidfVectorizer(**settings)
    assert_same_matrix(ours.fit_transform(train), theirs.fit_transform(train))
    if settings.get("use_idf", True):
        np.testing.assert_allclose(ours.idf_, theirs.idf_, rtol=1e-14)
    assert_same_matrix(ours.transform(unseen), theirs.transform(unseen))


def test_tfidf_on_short_documents_with_empty_rows():
    docs = HAND_MADE + ["zzz qqq"]
    ours, theirs = bow.TfidfBag(min_df=2), TfidfVectorizer(min_df=2)
    assert_same_matrix(ours.fit_transform(docs), theirs.fit_transform(docs))  # some rows end up empty
    assert_same_matrix(ours.transform(["nothing known here", ""]), theirs.transform(["nothing known here", ""]))


def test_idf_formula_on_a_hand_checkable_example():
    counts = sp.csr_matrix(np.array([[1, 0], [2, 1], [0, 0], [3, 0]]))  # df = [3, 1], n = 4
    np.testing.assert_allclose(bow.inverse_document_frequency(counts, smooth_idf=False),
                               [np.log(4 / 3) + 1, np.log(4) + 1])
    np.testing.assert_allclose(bow.inverse_document_frequency(counts), [np.log(5 / 4) + 1, np.log(5 / 2) + 1])


def test_clear_errors():
    with pytest.raises(ValueError, match="no terms are left"):
        bow.BagOfWords().fit(["", "a b c"])
    with pytest.raises(ValueError, match="max_df"):
        bow.BagOfWords(min_df=5, max_df=2).fit(HAND_MADE)
    with pytest.raises(TypeError, match="list of documents"):
        bow.BagOfWords().fit("one string")
    with pytest.raises(ValueError, match="fit the bag"):
        bow.BagOfWords().transform(["text"])
    with pytest.raises(ValueError, match="norm"):
        bow.TfidfBag(norm="l3").fit(HAND_MADE)


def test_word_order_is_lost():
    bag = bow.BagOfWords().fit(HAND_MADE)
    first, second = bag.transform(["dog bites man", "man bites dog"])
    assert (first != second).nnz == 0
    bigrams = bow.BagOfWords(ngram_range=(1, 2)).fit(["dog bites man", "man bites dog"])
    first, second = bigrams.transform(["dog bites man", "man bites dog"])
    assert (first != second).nnz > 0


def test_cosine_similarities_match_scikit_learn(speeches):
    train, unseen = speeches
    counts = bow.BagOfWords().fit(train)
    matrix = counts.transform(train)
    for text in unseen[:3] + [""]:
        query = counts.transform([text])
        np.testing.assert_allclose(bow.cosine_similarities(query, matrix), cosine_similarity(query, matrix).ravel(),
                                   atol=1e-12)


def test_search_ranks_by_cosine_and_explains_bad_queries(speeches):
    train, _ = speeches
    titles = [f"doc {i}" for i in range(len(train))]
    bag = bow.TfidfBag()
    index = bag.fit_transform(train)
    hits = bow.search("war and peace", bag, index, titles, k=3)
    reference = cosine_similarity(TfidfVectorizer().fit(train).transform(["war and peace"]),
                                  TfidfVectorizer().fit_transform(train)).ravel()
    assert [t for t, _ in hits] == [titles[i] for i in np.argsort(-reference, kind="stable")[:3]]
    assert hits[0][1] == pytest.approx(reference.max())
    with pytest.raises(ValueError, match="type a few words"):
        bow.search("  ", bag, index, titles)
    with pytest.raises(ValueError, match="close matches: 'constitutoin' -> constitution"):
        bow.search("constitutoin", bag, index, titles)


def test_distinctive_terms_are_the_highest_mean_weights():
    weights = sp.csr_matrix(np.array([[0.9, 0.1, 0.0], [0.7, 0.0, 0.3], [0.0, 0.2, 0.8]]))
    found = bow.distinctive_terms(weights, ["old", "old", "new"], np.array(["a", "b", "c"]), k=2)
    assert [t for t, _ in found["old"]] == ["a", "c"] and found["old"][0][1] == pytest.approx(0.8)
    assert [t for t, _ in found["new"]] == ["c", "b"]


def test_logistic_regression_matches_scikit_learn(sentences):
    texts, labels = sentences
    features = bow.TfidfBag(min_df=2).fit_transform(texts)
    ours = bow.SparseLogisticRegression(C=2.0).fit(features, labels)
    with threadpool_limits(1):  # threads make this small fit many times slower on a busy machine
        theirs = LogisticRegression(C=2.0, max_iter=2000, tol=1e-10).fit(features, labels)
    np.testing.assert_allclose(ours.coef_, theirs.coef_.ravel(), atol=2e-4)
    assert ours.intercept_ == pytest.approx(theirs.intercept_[0], abs=2e-4)
    np.testing.assert_allclose(ours.predict_proba(features), theirs.predict_proba(features)[:, 1], atol=1e-4)
    assert ours.accuracy(features, labels) == pytest.approx(theirs.score(features, labels), abs=1e-3)
    assert ours.losses[-1] < ours.losses[0]


def test_split_is_a_fixed_partition():
    train, test = bow.train_test_split_indices(100, test_fraction=0.25, seed=3)
    assert len(test) == 25 and sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    assert np.array_equal(test, bow.train_test_split_indices(100, test_fraction=0.25, seed=3)[1])


def _char_ngrams(text, n):
    import re

    text = re.sub(r"\s\s+", " ", text.lower())
    return [text[i:i + n] for i in range(len(text) - n + 1)]


def test_checker_accepts_a_solution_and_explains_the_rest(capsys):
    assert bow.check_char_ngrams(_char_ngrams)
    assert "✓" in capsys.readouterr().out

    def placeholder(text, n):
        raise NotImplementedError

    assert not bow.check_char_ngrams(placeholder)
    assert "Hint" in capsys.readouterr().out
    assert not bow.check_char_ngrams(lambda text, n: [text[i:i + n] for i in range(len(text) - n + 1)])
    assert "✗" in capsys.readouterr().out  # forgot to lowercase
