import numpy as np
import pytest

from llmlab import retrieval
from llmlab.checks import CourseError
from llmlab.retrieval import CharNgramTfidf, char_wb_ngrams, dictionary_index, question_word

WORDS = ["strawberry", "straw", "berry", "raspberry", "banana", "a", "committee", "ox"]


def test_char_ngrams_match_scikit_learn():
    from sklearn.feature_extraction.text import CountVectorizer

    for text in ["strawberry", "Straw  berry", "a", "ox is", "How many r's"]:
        for ngram_range in [(2, 4), (1, 3), (3, 5)]:
            expected = CountVectorizer(analyzer="char_wb", ngram_range=ngram_range).build_analyzer()(text)
            assert char_wb_ngrams(text, ngram_range) == expected, (text, ngram_range)
    assert char_wb_ngrams("berry", (2, 2)) == [" b", "be", "er", "rr", "ry", "y "]


def test_the_index_weights_are_scikit_learn_s_tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer

    ours = CharNgramTfidf(sublinear_tf=True).fit_transform(WORDS)
    theirs = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True).fit_transform(WORDS)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), atol=1e-12)


def test_misspelled_words_find_their_entry():
    index = dictionary_index()
    for query, word in [("strawbery", "strawberry"), ("stawberry", "strawberry"), ("strawberries", "strawberry"),
                        ("comittee", "committee"), ("raspbery", "raspberry"), ("Banana", "banana")]:
        assert index.lookup(query)[0].word == word
    hit = index.lookup("strawberry")[0]
    assert hit.score == pytest.approx(1.0)
    assert hit.definition == "sweet fleshy red fruit"


def test_the_question_s_word_and_the_augmented_prompt():
    question = "How many 'r's are in the word \"strawbery\"?"
    assert question_word(question) == "strawbery"
    assert question_word("What is a strawberry?") == "strawberry"
    word, prompt = retrieval.retrieved_spelling(question)
    assert word == "strawberry"
    assert prompt == 'Dictionary: "strawberry" is spelled s t r a w b e r r y.\n' + question


def test_bad_input_gets_a_course_error():
    index = dictionary_index()
    for query in ["", None, "x" * 500]:
        with pytest.raises(CourseError):
            index.lookup(query)
    with pytest.raises(CourseError):
        index.lookup("strawberry", k=0)
    with pytest.raises(CourseError):
        question_word("?? 123 !!")
    with pytest.raises(CourseError):
        retrieval.DictionaryIndex({})
