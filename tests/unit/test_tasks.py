"""The word tasks: one definition of "correct", the fixed held-out split, balanced questions."""

from collections import Counter

import pytest

from llmlab import tasks
from llmlab.checks import CourseError


@pytest.mark.parametrize("completion, value", [
    ("3", 3), ("There are three r's.", 3), ("strawberry has 3", 3), ("-3", -3), ("no idea", None),
    ("r(1) a w b e r(2) r(3) y -> 3", 3), ("Two r's, not 3... no, 2", 2), ("", None), ("twelve", 12),
    ("3rd", None), ("x3", None), ("3.", 3),
])
def test_last_number_reads_the_final_stated_count(completion, value):
    assert tasks.last_number(completion) == value


def test_letter_count_is_case_blind_and_refuses_what_is_not_one_letter():
    assert tasks.LetterCount("Strawberry", "R").answer == 3
    assert tasks.STRAWBERRY.answer_text == 'There are 3 \'r\'s in "strawberry".'
    assert tasks.LetterCount("cat", "a").answer_text == 'There is 1 \'a\' in "cat".'
    for word, letter in [("strawberry", ""), ("strawberry", "rr"), ("straw berry", "r"), ("r2d2", "r"),
                         ("café", "e"), (None, "r"), ("berry", 3)]:
        with pytest.raises(CourseError):
            tasks.LetterCount(word, letter)


def test_grading_never_raises_on_malformed_completions():
    for completion in ["", "???", "3 3 3 three", "\n\n", "-", "∞", "r" * 10_000]:
        for task in [tasks.STRAWBERRY, tasks.Spelling("cat"), tasks.FirstLetter("cat"), tasks.WordLength("cat")]:
            assert task.reward(completion) in (0.0, 1.0)


def test_every_task_grades_its_own_answer_text_right_and_a_wrong_one_wrong():
    for kind, task_type in tasks.TASK_KINDS.items():
        for word in ["strawberry", "cat", "bookkeeper"]:
            task = task_type(word, "e") if task_type is tasks.LetterCount else task_type(word)
            assert task.grade(task.answer_text), (kind, word, task.answer_text)
    assert not tasks.STRAWBERRY.grade("There are 2 'r's in \"strawberry\".")
    assert not tasks.Spelling("cat").grade("c a r")
    assert not tasks.LastLetter("cat").grade("The last letter of \"cat\" is 'c'.")


def test_split_is_disjoint_fixed_and_holds_out_every_named_word():
    split = tasks.word_split()
    assert not set(split.train) & set(split.held_out)
    assert set(tasks.NAMED_WORDS) <= set(split.held_out)
    assert 0.15 < len(split.held_out) / (len(split.train) + len(split.held_out)) < 0.25
    assert len(split.held_out) > 2000 and len(split.train) > 8000
    # the split is a property of each word, not of the list: a hash decides
    assert all(tasks._held_out_by_hash(w) for w in split.held_out if w not in tasks.NAMED_WORDS)


def test_training_sets_with_a_held_out_word_are_refused():
    tasks.check_training_words(tasks.word_split().train[:100])
    with pytest.raises(CourseError, match="held-out"):
        tasks.check_training_words(["cat", "strawberry"])


def test_questions_are_balanced_over_the_true_count_and_seeded():
    words = tasks.word_split().train
    questions = tasks.letter_count_questions(words, 400, seed=3)
    assert questions == tasks.letter_count_questions(words, 400, seed=3)
    buckets = Counter(min(q.answer, 3) for q in questions)
    assert buckets == {0: 100, 1: 100, 2: 100, 3: 100}
    assert tasks.constant_baseline(questions)[1] == pytest.approx(0.25)
    assert len({(q.word, q.letter) for q in questions}) == 400  # dealt without repeats


def test_heldout_questions_are_fixed_balanced_and_held_out():
    questions = tasks.heldout_questions()
    assert len(questions) == tasks.HELDOUT_QUESTIONS
    assert questions[:20] == tasks.heldout_questions(20)
    assert {q.word for q in questions} <= set(tasks.word_split().held_out)
    assert tasks.constant_baseline(questions)[1] <= 0.25


def test_accuracy_counts_right_answers_and_refuses_mismatched_lengths():
    questions = [tasks.STRAWBERRY, tasks.LetterCount("cat", "z")]
    assert tasks.accuracy(questions, ["3", "0"]) == 1.0
    assert tasks.accuracy(questions, ["2", "zero"]) == 0.5
    with pytest.raises(CourseError):
        tasks.accuracy(questions, ["3"])
    with pytest.raises(CourseError):
        tasks.accuracy([], [])
