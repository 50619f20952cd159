import json

import pytest
import torch

from llmlab import chat, constrained, sft, tasks
from llmlab.checks import CourseError
from llmlab.constrained import (JSON_ANSWER, NUMBER, NUMBER_IN_SENTENCE, Chars, Literal, Pattern,
                                TokenConstraint, constrained_replies, parse_json_answer, to_gbnf)
from llmlab.gpt import GPT, GPTConfig

QUESTIONS = [q.question for q in tasks.heldout_questions(6)]


@pytest.fixture(scope="module")
def model(tokenizer):
    """Random weights: the constraint, not the model, must make every reply parse."""
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(tokenizer), block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()


@pytest.fixture(scope="module")
def json_constraint(tokenizer):
    return TokenConstraint(JSON_ANSWER, tokenizer, tokenizer.convert_tokens_to_ids(chat.END))


def test_the_pattern_automaton_reads_by_hand():
    assert NUMBER.matches("3") and NUMBER.matches("0")
    assert not NUMBER.matches("") and not NUMBER.matches("12") and not NUMBER.matches("3.")
    assert JSON_ANSWER.matches('{"word": "strawberry", "letter": "r", "count": 3}')
    assert not JSON_ANSWER.matches('{"word": "strawberry", "letter": "rr", "count": 3}')
    assert not JSON_ANSWER.matches('{"word": "Strawberry", "letter": "r", "count": 3}')
    assert not JSON_ANSWER.matches('{"word": "strawberry", "letter": "r", "count": 3')  # unfinished
    assert not JSON_ANSWER.matches('{"word": "strawberry", "letter": "r", "count": 03}')  # not JSON
    assert NUMBER_IN_SENTENCE.matches("There are 3") and not NUMBER_IN_SENTENCE.matches("There are 33")
    assert JSON_ANSWER.longest() == len('{"word": "') + 40 + len('", "letter": "') + 1 + len('", "count": ') + 1 + 1
    assert JSON_ANSWER.matches(JSON_ANSWER.example())
    assert parse_json_answer(JSON_ANSWER.example()) == {"word": "a", "letter": "a", "count": 0}


def test_patterns_that_need_guessing_or_are_empty_are_refused():
    with pytest.raises(CourseError):
        Pattern(Chars("ab", 1, 3), Literal("a"))
    with pytest.raises(CourseError):
        Pattern()
    with pytest.raises(CourseError):
        Pattern(Literal(""))
    with pytest.raises(CourseError):
        Pattern(Chars("ab", 3, 2))


def test_the_gbnf_grammar_is_the_pattern():
    assert to_gbnf(JSON_ANSWER) == ('root ::= "{\\"word\\": \\"" [a-z]{1,40} "\\", \\"letter\\": \\"" [a-z] '
                                    '"\\", \\"count\\": " [0-9] "}"\n')
    assert to_gbnf(NUMBER) == "root ::= [0-9]\n"
    assert to_gbnf(Pattern(Chars("ab-", 0, 3))) == "root ::= [ab\\-]{0,3}\n"


@pytest.mark.parametrize("seed", range(3))
def test_every_constrained_reply_parses_even_from_random_weights(model, tokenizer, json_constraint, seed):
    generator = torch.Generator().manual_seed(seed)
    replies = constrained_replies(model, tokenizer, json_constraint, QUESTIONS, max_new_tokens=60,
                                  temperature=1.5, generator=generator)
    for reply in replies:
        assert JSON_ANSWER.matches(reply), reply
        value = json.loads(reply)
        assert set(value) == {"word", "letter", "count"} and isinstance(value["count"], int)


def test_the_shortest_budget_still_finishes_every_reply(model, tokenizer, json_constraint):
    need = json_constraint.fewest_from_start
    replies = constrained_replies(model, tokenizer, json_constraint, QUESTIONS, max_new_tokens=need,
                                  temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert all(JSON_ANSWER.matches(r) for r in replies)
    with pytest.raises(CourseError, match="too few"):
        constrained_replies(model, tokenizer, json_constraint, QUESTIONS, max_new_tokens=need - 1)


def test_a_number_constraint_gives_digits_that_the_task_reads(model, tokenizer):
    number = TokenConstraint(NUMBER, tokenizer, tokenizer.convert_tokens_to_ids(chat.END))
    questions = tasks.heldout_questions(6)
    replies = constrained_replies(model, tokenizer, number, [q.question for q in questions], max_new_tokens=4)
    assert all(r.isdigit() and len(r) == 1 for r in replies)
    assert all(q.parse(r) == int(r) for q, r in zip(questions, replies))


def test_bad_prompts_are_refused(model, tokenizer, json_constraint):
    with pytest.raises(CourseError):
        constrained_replies(model, tokenizer, json_constraint, "one string")
    with pytest.raises(CourseError):
        constrained_replies(model, tokenizer, json_constraint, ["x " * 200])  # does not fit the window


def test_llama_cpp_grammar_gives_llmlab_s_constrained_answer(model, tokenizer, json_constraint, tmp_path):
    from llmlab.export import load_gguf

    path = sft.export_chat_gguf(model, tokenizer, tmp_path / "random.gguf")
    llm = load_gguf(path, exact=True)
    try:
        for question in QUESTIONS[:3]:
            ids = chat.prompt_ids(tokenizer, [{"role": "user", "content": question}])
            ours = constrained_replies(model, tokenizer, json_constraint, [question],
                                       max_new_tokens=JSON_ANSWER.longest() + 1)[0]
            theirs = constrained.llama_cpp_constrained_reply(llm, ids, JSON_ANSWER)
            assert JSON_ANSWER.matches(theirs)
            assert theirs == ours
        with pytest.raises(CourseError, match="not finished"):
            constrained.llama_cpp_constrained_reply(llm, ids, JSON_ANSWER, max_tokens=5)
    finally:
        llm.close()
