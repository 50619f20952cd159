import pytest
import torch

from llmlab import chat, showdown, tasks, tools
from llmlab.checks import CourseError
from llmlab.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(tokenizer), block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()


@pytest.fixture(scope="module")
def chat_model(tokenizer):
    """A tiny GPT trained a few seconds on word-task chats, so its greedy reply is varied (as in test_sft)."""
    from llmlab import sft

    torch.manual_seed(0)
    rows = sft.word_task_conversations(tasks.word_split().train[:300], 300, 0, seed=0)
    examples = [chat.chat_example(tokenizer, r["messages"]) for r in rows]
    trained = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=2, n_head=2, n_embd=64))
    inputs, targets = sft.pack_rows(examples, 64, answer_only=True, pad_id=tokenizer.eos_token_id)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=3e-3)
    for step in range(150):
        batch = torch.randint(0, len(inputs), (16,), generator=torch.Generator().manual_seed(step))
        _, loss = trained(inputs[batch], targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return trained.eval()


def test_majority_vote_by_hand():
    assert showdown.majority_vote([3, 2, 3, None, 2, 3]) == 3
    assert showdown.majority_vote([None, 2, 1, 1, 2]) == 2  # a tie: the answer given first
    assert showdown.majority_vote([None, None]) is None
    assert showdown.majority_vote([]) is None


def test_the_lineup_holds_the_course_s_models_and_one_call_adds_a_row():
    assert list(showdown.LINEUP)[:6] == ["bigram", "base", "base, few-shot", "SFT", "persona", "merged"]
    assert all(c.era in showdown.ERAS for c in showdown.LINEUP.values())
    showdown.register("test row", "instruct", "99", lambda: None)
    try:
        assert showdown.contender("test row").answer is showdown.chat_answers
    finally:
        del showdown.LINEUP["test row"]
    with pytest.raises(CourseError, match="no model named"):
        showdown.contender("gpt-5")


def test_chat_answers_equal_sft_replies(model, tokenizer):
    from llmlab import sft

    prompts = [q.question for q in tasks.heldout_questions(4)]
    ours = showdown.chat_answers(model, prompts, max_new_tokens=12)
    assert ours.texts == sft.replies(model, tokenizer, prompts, max_new_tokens=12)
    assert all(1 <= n <= 12 for n in ours.tokens)


def test_a_lineup_row_grades_with_the_course_grader(model):
    class Always3:  # a "model" that answers 3 whatever it is asked: right on strawberry
        pass

    entry = showdown.Contender("always 3", "instruct", "--", lambda: Always3(),
                               lambda m, prompts, **kw: showdown.Replies(["There are 3."] * len(prompts),
                                                                         [4] * len(prompts)))
    questions = tasks.heldout_questions(40)
    row = showdown.lineup_row(entry, Always3(), questions, samples=5)
    assert row["greedy right"] and row[f"right of 5 samples"] == 1.0
    assert row["held-out accuracy"] == pytest.approx(sum(q.answer == 3 for q in questions) / 40)
    assert row["tokens per answer"] == 4


def test_self_consistency_votes_over_the_first_k_samples():
    answers = iter(["1", "3", "3", "0", "0", "0"] * 100)  # per question: 1, 3, 3 (k=3 -> 3), then 0, 0, 0
    entry = showdown.Contender("scripted", "instruct", "--", lambda: None,
                               lambda m, prompts, **kw: showdown.Replies([next(answers) for _ in prompts],
                                                                         [1] * len(prompts)))
    strawberry = [tasks.STRAWBERRY]
    assert showdown.self_consistency(entry, None, strawberry, [1, 3]) == {1: 0.0, 3: 1.0}


def test_reflection_counts_fixes_and_breaks():
    # first turn: right on strawberry (3), wrong on the other; second turn: says 3 to everything
    other = tasks.LetterCount("banana", "a")  # 3 as well: the second turn keeps it right
    wrong = tasks.LetterCount("cherry", "r")  # 2: broken by "3"
    replies = {tasks.STRAWBERRY.question: "1", other.question: "3", wrong.question: "2"}

    def answer(m, prompts, **kw):
        texts = ["3" if isinstance(p, list) else replies[p] for p in prompts]
        return showdown.Replies(texts, [1] * len(texts))

    entry = showdown.Contender("scripted", "instruct", "--", lambda: None, answer)
    r = showdown.reflection(entry, None, [tasks.STRAWBERRY, other, wrong])
    assert r["accuracy before"] == pytest.approx(2 / 3) and r["accuracy after"] == pytest.approx(2 / 3)
    assert r["fixed (of the wrong)"] == 1.0 and r["broken (of the right)"] == 0.5


def test_tool_use_runs_the_model_s_call_and_grades_the_result():
    def answer(m, prompts, **kw):
        texts = []
        for p in prompts:
            q = p[-1]["content"] if isinstance(p, list) else p
            word = q.split('"')[1]
            texts.append({"strawberry": 'count("strawberry", "r")', "banana": 'count("bananas", "a")',
                          "cherry": 'os.system("rm -rf /")'}[word])
        return showdown.Replies(texts, [1] * len(texts))

    entry = showdown.Contender("scripted", "instruct", "--", lambda: None, answer)
    questions = [tasks.STRAWBERRY, tasks.LetterCount("banana", "a"), tasks.LetterCount("cherry", "r")]
    r = showdown.tool_use(entry, None, questions)
    assert r["replies with a call"] == 1.0
    assert r["calls run"] == pytest.approx(2 / 3)  # the hostile call is refused, not run
    assert r["right word and letter"] == pytest.approx(1 / 3)
    assert r["accuracy"] == pytest.approx(2 / 3)  # "bananas" has 3 a's too: right by luck, as graded


def test_tool_training_data_uses_training_words_only():
    rows = showdown.tool_conversations(50)
    words = [m[0]["content"].split('"')[1] for m in rows]
    tasks.check_training_words(words)
    assert all(tools.run_tool_call(m[1]["content"]) == tasks.LetterCount(w, m[0]["content"].split("'")[1]).answer
               for m, w in zip(rows, words))


def test_few_shot_examples_are_training_words_and_the_bigram_answers():
    tasks.check_training_words([q.word for q in showdown.few_shot_questions()])
    bigram = showdown.bigram_model()
    replies = showdown.bigram_answers(bigram, [tasks.STRAWBERRY.question], max_new_tokens=30)
    assert len(replies.texts) == 1 and replies.tokens == [30]
    sampled = showdown.bigram_answers(bigram, [tasks.STRAWBERRY.question] * 2, temperature=1.0, max_new_tokens=30,
                                      generator=torch.Generator().manual_seed(0))
    assert len(sampled.texts) == 2


def test_llama_cpp_gives_llmlab_s_greedy_tokens(chat_model, tokenizer, tmp_path):
    from llmlab import sft

    path = sft.export_chat_gguf(chat_model, tokenizer, tmp_path / "m.gguf")
    ours, theirs = showdown.llmlab_and_llama_cpp_tokens(chat_model, path, tasks.STRAWBERRY.question, 30)
    assert len(set(ours)) > 3 and ours[-1] == tokenizer.convert_tokens_to_ids(chat.END)  # varied, and it stopped
    assert ours == theirs


def test_ask_refuses_a_single_string(model):
    with pytest.raises(CourseError):
        showdown.ask(showdown.LINEUP["SFT"], model, "How many?")


def test_the_exercise_checker_accepts_the_solution_and_refuses_a_wrong_one(model, capsys):
    def solution(question):
        word = question.split('"')[1]
        return f"The word {word} is spelled {' '.join(word)}.\n{question}"

    assert showdown.check_spelled_prompt(solution, model=model, n=4)
    assert not showdown.check_spelled_prompt(lambda q: q, model=model, n=4)
    assert "does not spell it out" in capsys.readouterr().out
