"""The strawberry showdown (notebook 12): every model of the course asked the same questions, graded one way.

    LINEUP                    name -> Contender: how to load a model and how to ask it (one line adds a row)
    ask(contender, prompts)   the replies (and tokens written) of one contender
    lineup_row(contender)     its strawberry answer (greedy; share right over 20 samples), held-out accuracy,
                              tokens and seconds per answer
    era_chart(table)          the closing chart: accuracy per era of the strawberry timeline

and the techniques of the "State of GPT" talk, each a function measured on any chat model of the lineup:
chain of thought (`COT_SUFFIX`), self-consistency (`self_consistency`), reflection (`reflection`), tool use
(`tool_use`, with `llmlab.tools`), constrained output (`llmlab.constrained`), retrieval (`llmlab.retrieval`).

The grader is `llmlab.tasks`, and the questions are `tasks.heldout_questions()`: held-out words that no stage
of the course trained on, the same for every model of notebooks 08-12.
"""

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Callable

import torch

from llmlab import chat, reasoning, sft, tasks, tools
from llmlab.checks import NOT_DONE, CourseError, check_new_tokens, check_positive_int, learner_call
from llmlab.generation import few_shot_prompt, generate_batch
from llmlab.runtime import by_mode
from llmlab.tokenizer import course_tokenizer

SAMPLES = 20  # strawberry samples per model
SAMPLE_TEMPERATURE = 0.7  # the temperature of every sampled answer (notebook 11 samples at 0.7 too)
CHAT_MAX_TOKENS = 40  # a direct answer ("There are 3 'r's in \"strawberry\".") is about 15 tokens


@dataclass
class Replies:
    texts: list[str]
    tokens: list[int]  # tokens each reply took (characters, for the character bigram)


@dataclass(frozen=True)
class Contender:
    """One row of the lineup: a model of the course, and the way it is asked."""

    name: str
    era: str  # the era of the strawberry timeline it stands for
    notebook: str
    load: Callable  # () -> the model (an artifact: cached, or built the first time)
    answer: Callable  # (model, prompts, *, temperature, generator, max_new_tokens) -> Replies
    max_new_tokens: int = CHAT_MAX_TOKENS
    chat: bool = True  # a chat model: the techniques below apply to it
    options: dict = field(default_factory=dict)  # extra keyword arguments for answer


# --- asking the different kinds of model ------------------------------------------------------------------------

def _stop_ids(tokenizer) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(chat.END), tokenizer.eos_token_id]


def _fit(ids: list[int], room: int) -> list[int]:
    """A prompt longer than room keeps its last room tokens (the question is at the end). Only the tiny models of
    fast mode (a window of 64 tokens) ever need it; a full-mode prompt fits."""
    return ids[-room:]


def chat_answers(model, prompts, *, temperature: float = 0.0, generator=None,
                 max_new_tokens: int = CHAT_MAX_TOKENS) -> Replies:
    """A chat model's replies to prompts (questions, or lists of chat messages), as `sft.replies` gives them."""
    tokenizer = course_tokenizer()
    room = max(model.config.block_size - max_new_tokens, model.config.block_size // 2)
    ids = [_fit(chat.prompt_ids(tokenizer, [{"role": "user", "content": p}] if isinstance(p, str) else p), room)
           for p in prompts]
    new = []
    for start in range(0, len(ids), 250):
        new += generate_batch(model, ids[start:start + 250], max_new_tokens, temperature=temperature,
                              stop_tokens=_stop_ids(tokenizer), generator=generator)
    return Replies([tokenizer.decode(n, skip_special_tokens=True) for n in new], [len(n) for n in new])


def continuation_answers(model, prompts, *, temperature: float = 0.0, generator=None,
                         max_new_tokens: int = 24) -> Replies:
    """A base model's continuation of each prompt (plain text), cut at the end of its first line: the reply."""
    tokenizer = course_tokenizer()
    room = max(model.config.block_size - max_new_tokens, model.config.block_size // 2)
    ids = [_fit(tokenizer.encode(p, add_special_tokens=False), room) for p in prompts]
    new = generate_batch(model, ids, max_new_tokens, temperature=temperature, stop_tokens=[tokenizer.eos_token_id],
                         generator=generator)
    texts = [tokenizer.decode(n, skip_special_tokens=True) for n in new]
    return Replies([t.strip().split("\n")[0] for t in texts], [len(n) for n in new])


# The few-shot prompt of notebook 07: an instruction, three solved questions on TRAINING words, the question.
FEW_SHOT_INSTRUCTION = "A helpful assistant answers each question with one number."
FEW_SHOT_TEMPLATE = "User: {x}\nAssistant: {y}"


@cache
def few_shot_questions(n: int = 3) -> tuple:
    """n solved letter-count questions on short TRAINING words: the examples of every few-shot prompt here."""
    words = [w for w in tasks.word_split().train if len(w) <= 8]
    questions = tasks.letter_count_questions(words, n, seed=1)
    tasks.check_training_words([q.word for q in questions])
    return tuple(questions)


def few_shot_answers(model, prompts, **kwargs) -> Replies:
    shots = [(q.question, str(q.answer)) for q in few_shot_questions()]
    wrapped = [few_shot_prompt(shots, p, instruction=FEW_SHOT_INSTRUCTION, template=FEW_SHOT_TEMPLATE)
               for p in prompts]
    return continuation_answers(model, wrapped, **kwargs)


@cache
def bigram_model():
    """Notebook 00's character bigram model of Shakespeare (counts of the first 90% of the text: a second)."""
    from llmlab import bigram, corpora

    text = corpora.shakespeare()
    return bigram.CharBigram(text[:int(0.9 * len(text))])


def bigram_answers(model, prompts, *, temperature: float = 0.0, generator=None, max_new_tokens: int = 40) -> Replies:
    """The bigram's continuation of each prompt, to the end of its first line (it knows no '"': made "'")."""
    texts = []
    for prompt in prompts:
        last = model.encode(prompt.replace('"', "'"))[-1]
        written = []
        for _ in range(max_new_tokens):
            row = model.probs[last]
            if temperature == 0:
                last = int(row.argmax())
            else:
                weights = row ** (1 / temperature)
                last = int(torch.multinomial(weights / weights.sum(), 1, generator=generator))
            written.append(last)
        texts.append(model.decode(written))
    return Replies([t.strip().split("\n")[0] for t in texts], [max_new_tokens] * len(prompts))


BEST_OF_N = 4  # answers sampled per question for best-of-n (notebook 09 measures n = 1 ... 16; more costs more here)


def best_of_n_answers(model, prompts, *, temperature: float = 0.0, generator=None,
                      max_new_tokens: int = CHAT_MAX_TOKENS, n: int = BEST_OF_N) -> Replies:
    """Notebook 09's best-of-n: n answers sampled from the SFT model (temperature 1), the one the reward model
    scores highest. model is (policy, reward model). Always sampled: temperature is not used (greedy would give n
    identical answers). Tokens count all n samples (each re-encoded, plus its stop token)."""
    from llmlab import reward

    policy, rm = model
    tokenizer = course_tokenizer()
    generator = generator or torch.Generator().manual_seed(0)
    samples = reward.sample_answers(policy, tokenizer, prompts, n, temperature=1.0, max_new_tokens=max_new_tokens,
                                    generator=generator)
    best, _ = reward.pick_best(rm, prompts, samples)
    tokens = [sum(len(tokenizer.encode(s, add_special_tokens=False)) + 1 for s in group) for group in samples]
    return Replies(best, tokens)


def _best_of_n_models():
    from llmlab import reward

    return sft.sft_model(), reward.reward_model()


# --- the lineup ------------------------------------------------------------------------------------------------

LINEUP: dict[str, Contender] = {}


def register(name: str, era: str, notebook: str, load: Callable, answer: Callable = chat_answers, **settings) -> None:
    """Add a row to the lineup (a new model of the course is one call)."""
    LINEUP[name] = Contender(name, era, notebook, load, answer, **settings)


def _sft(name):
    def load():
        return {"sft": sft.sft_model, "persona": sft.persona_model, "merged": sft.merged_model}[name]()
    return load


def _rlhf():
    from llmlab import rlhf

    return rlhf


def _base():
    from llmlab.pretraining import base_model

    return base_model()


register("bigram", "n-grams", "00", bigram_model, bigram_answers, chat=False)
register("base", "base", "06", _base, continuation_answers, max_new_tokens=24, chat=False)
register("base, few-shot", "base", "07", _base, few_shot_answers, max_new_tokens=8, chat=False)
register("SFT", "instruct", "08", _sft("sft"))
register("persona", "persona & merge", "08", _sft("persona"))
register("merged", "persona & merge", "08", _sft("merged"))
register(f"best-of-{BEST_OF_N}", "aligned", "09", _best_of_n_models, best_of_n_answers, chat=False)
register("RLHF", "aligned", "10", lambda: _rlhf().rlhf_model())
register("DPO", "aligned", "10", lambda: _rlhf().dpo_model())
register("reasoner", "reasoning", "11", lambda: reasoning.reasoner_model(), max_new_tokens=reasoning.REASONING_MAX_TOKENS)

ERAS = ("n-grams", "base", "instruct", "persona & merge", "aligned", "reasoning")


def contender(name: str) -> Contender:
    if name not in LINEUP:
        raise CourseError(f"no model named {name!r} in the lineup; the lineup is {list(LINEUP)}")
    return LINEUP[name]


def ask(entry: Contender, model, prompts, *, temperature: float = 0.0, generator=None,
        max_new_tokens: int | None = None) -> Replies:
    """The replies of one contender (its model already loaded) to prompts."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise CourseError(f"ask takes a non-empty list of prompts, not {type(prompts).__name__}")
    max_new_tokens = check_new_tokens("max_new_tokens", max_new_tokens or entry.max_new_tokens, minimum=1)
    return entry.answer(model, list(prompts), temperature=temperature, generator=generator,
                        max_new_tokens=max_new_tokens, **entry.options)


def lineup_row(entry: Contender, model, questions, *, samples: int = SAMPLES, seed: int = 0) -> dict:
    """One row of the table: the strawberry answer (greedy, and the share right over `samples` samples), held-out
    accuracy, mean tokens per answer and seconds per answer (the held-out batch, timed); "answers" holds the
    held-out answers themselves (for the leaderboard)."""
    check_positive_int("samples", samples, maximum=1000)
    greedy = ask(entry, model, [tasks.STRAWBERRY.question]).texts[0]
    generator = torch.Generator().manual_seed(seed)
    sampled = ask(entry, model, [tasks.STRAWBERRY.question] * samples, temperature=SAMPLE_TEMPERATURE,
                  generator=generator).texts
    start = time.perf_counter()
    replies = ask(entry, model, [q.question for q in questions])
    seconds = time.perf_counter() - start
    return {"model": entry.name, "era": entry.era, "notebook": entry.notebook, "answers": replies.texts,
            "strawberry (greedy)": greedy, "greedy right": tasks.STRAWBERRY.grade(greedy),
            f"right of {samples} samples": sum(map(tasks.STRAWBERRY.grade, sampled)) / samples,
            "held-out accuracy": tasks.accuracy(questions, replies.texts),
            "tokens per answer": sum(replies.tokens) / len(replies.tokens),
            "ms per answer": 1000 * seconds / len(questions)}


# --- techniques ------------------------------------------------------------------------------------------------

COT_SUFFIX = " Let's think step by step."


def chain_of_thought(question: str) -> str:
    """The question with the prompt that made large models reason (Kojima et al., 2022)."""
    return question + COT_SUFFIX


def majority_vote(answers) -> int | None:
    """The most common answer that is not None (ties: the one given first); None if there is none."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def self_consistency(entry: Contender, model, questions, ks, *, seed: int = 0) -> dict[int, float]:
    """Accuracy of the majority vote over k sampled answers, for each k of ks (Wang et al., 2022).

    max(ks) answers are sampled per question once; the vote over k uses the first k of them.
    """
    ks = sorted(set(check_positive_int("k", k, maximum=64) for k in ks))
    generator = torch.Generator().manual_seed(seed)
    prompts = [q.question for q in questions for _ in range(ks[-1])]
    texts = ask(entry, model, prompts, temperature=SAMPLE_TEMPERATURE, generator=generator).texts
    curve = {}
    for k in ks:
        right = 0
        for i, q in enumerate(questions):
            votes = [q.parse(t) for t in texts[i * ks[-1]: i * ks[-1] + k]]
            right += majority_vote(votes) == q.answer
        curve[k] = right / len(questions)
    return curve


REFLECTION_PROMPT = "Check your answer: count the letters again, one by one. How many are there?"


def reflection(entry: Contender, model, questions) -> dict:
    """A second turn asks the model to check its answer: how often it fixes a wrong count, breaks a right one."""
    first = ask(entry, model, [q.question for q in questions]).texts
    conversations = [[{"role": "user", "content": q.question}, {"role": "assistant", "content": a.strip() or "?"},
                      {"role": "user", "content": REFLECTION_PROMPT}] for q, a in zip(questions, first)]
    second = ask(entry, model, conversations).texts
    before = [q.grade(a) for q, a in zip(questions, first)]
    after = [q.grade(a) for q, a in zip(questions, second)]
    wrong, right = before.count(False), before.count(True)
    fixed = sum(not b and a for b, a in zip(before, after))
    broken = sum(b and not a for b, a in zip(before, after))
    return {"accuracy before": right / len(questions), "accuracy after": sum(after) / len(questions),
            "fixed (of the wrong)": fixed / max(wrong, 1), "broken (of the right)": broken / max(right, 1),
            "changed its count": sum(q.parse(a) != q.parse(b) for q, a, b in zip(questions, first, second))
            / len(questions), "examples": list(zip(questions[:3], first[:3], second[:3]))}


# Tool use taught by a few-shot conversation: two solved turns, then the question.
TOOL_SYSTEM = 'You can call a tool: count("word", "letter") returns how many times the letter is in the word.'


def tool_prompt(question: str, shots: int = 2) -> list[dict]:
    """A chat in which the assistant answered earlier letter questions (training words) with a tool call."""
    messages = [{"role": "system", "content": TOOL_SYSTEM}]
    for q in few_shot_questions()[:shots]:
        messages += [{"role": "user", "content": q.question},
                     {"role": "assistant", "content": tools.tool_call_text(q.word, q.letter)}]
    return messages + [{"role": "user", "content": question}]


def tool_use(entry: Contender, model, questions, *, prompt: Callable = tool_prompt) -> dict:
    """The model writes a call; `llmlab.tools` runs it, or refuses it; the tool's result is the answer.

    Shares of replies holding a call, of calls run (not refused), of calls on the right word and letter, and the
    accuracy of the answers so made (a refused call or no call answers nothing)."""
    replies = ask(entry, model, [prompt(q.question) for q in questions]).texts
    done = [tools.answer_with_tool(r) for r in replies]
    called = [c is not None for c, _, _ in done]
    ran = [e is None for _, _, e in done]
    exact = []
    for q, (call, _, error) in zip(questions, done):
        parsed = tools.parse_tool_call(call) if call and error is None else None
        exact.append(parsed is not None and parsed.arguments == (q.word, q.letter))
    answers = ["" if result is None else f"The tool says {result}." for _, result, _ in done]
    n = len(questions)
    return {"replies with a call": sum(called) / n, "calls run": sum(ran) / n,
            "right word and letter": sum(exact) / n, "accuracy": tasks.accuracy(questions, answers),
            "examples": list(zip(questions[:3], replies[:3], [d[1] if d[2] is None else d[2] for d in done[:3]]))}


# Tool use taught by fine-tuning: the SFT model trained a little more on letter questions (TRAINING words) whose
# answer is the call. Measured on the full sizes: 300 steps took about 50 s on 2 busy cores.
TOOL_SFT_CONFIG = {
    "questions": by_mode(full=3000, fast=64),
    "training": {**sft.SFT_CONFIG["training"], "max_steps": by_mode(full=300, fast=8), "batch_size": 4,
                 "warmup_steps": by_mode(full=10, fast=2), "eval_interval": by_mode(full=300, fast=8)},
    "seed": 5,
}


def tool_conversations(n: int, *, seed: int = 5) -> list[list[dict]]:
    """n letter-count questions on training words, each answered by the call that counts (balanced counts)."""
    questions = tasks.letter_count_questions(tasks.word_split().train, n, seed=seed)
    tasks.check_training_words([q.word for q in questions])
    return [[{"role": "user", "content": q.question},
             {"role": "assistant", "content": tools.tool_call_text(q.word, q.letter)}] for q in questions]


def _build_tool_model(folder) -> None:
    import copy
    import json

    from llmlab.training import save_model

    start = time.perf_counter()
    tokenizer = course_tokenizer()
    model = copy.deepcopy(sft.sft_model())
    examples = [chat.chat_example(tokenizer, m) for m in tool_conversations(TOOL_SFT_CONFIG["questions"],
                                                                            seed=TOOL_SFT_CONFIG["seed"])]
    history = sft.finetune(model, examples, TOOL_SFT_CONFIG, desc="sft-tools")
    save_model(model, folder)
    (folder / "history.json").write_text(json.dumps({"build_seconds": time.perf_counter() - start,
                                                     "final_train_loss": history.train_loss[-1]}))


def tool_model():
    """The tool-using assistant (artifact "sft-tools"): "sft" fine-tuned to answer letter questions with a call."""
    from llmlab import artifacts
    from llmlab.training import load_model

    sft.sft_model()  # the parent first: its fingerprint is part of the config
    config = {**TOOL_SFT_CONFIG, "sft": sft._fingerprint("sft"), "files": 1}
    return artifacts.cached("sft-tools", build=_build_tool_model, load=load_model, config=config)


def accuracy_of(entry: Contender, model, questions, prompts) -> float:
    """Held-out accuracy when each question is asked with its own prompt (a technique's rewrite of it)."""
    return tasks.accuracy(questions, ask(entry, model, list(prompts)).texts)


# --- the closing chart -----------------------------------------------------------------------------------------

def era_chart(table, *, baseline: float, quoted: dict | None = None, ax=None):
    """Held-out accuracy of every model, grouped by era of the strawberry timeline, beside the constant baseline;
    quoted (name -> (era, right?)) adds the quoted real models' strawberry verdicts, marked as quoted."""
    from llmlab.plots import axes

    ax = axes("The strawberry timeline, told by the course's models", "era of the timeline",
              "held-out letter-count accuracy", ax=ax, figsize=(10, 4.5))
    colours = dict(zip(ERAS, ["#9ca3af", "#60a5fa", "#34d399", "#f472b6", "#fbbf24", "#ef4444"]))
    positions, labels = [], []
    x = 0
    for era in ERAS:
        rows = table[table["era"] == era]
        for _, row in rows.iterrows():
            ax.bar(x, row["held-out accuracy"], color=colours[era], edgecolor="black", linewidth=0.5)
            ax.text(x, row["held-out accuracy"] + 0.01, f"{row['held-out accuracy']:.0%}", ha="center", fontsize=8)
            positions.append(x)
            labels.append(f"{row['model']}\n({era})")
            x += 1
        if len(rows):
            x += 0.5
    for name, (era, right) in (quoted or {}).items():
        ax.scatter([x], [1.0 if right else 0.0], marker="*", s=160, color=colours.get(era, "black"), zorder=3)
        positions.append(x)
        labels.append(f"{name}\n(quoted: {'right' if right else 'wrong'})")
        x += 1
    ax.axhline(baseline, color="gray", linestyle=":", label=f"constant baseline ({baseline:.0%})")
    ax.set_xticks(positions, labels=labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.legend(loc="upper left", fontsize=8)
    return ax


def held_out(n: int | None = None) -> list:
    """The held-out letter-count questions of notebooks 08-12 (all 500 in full mode, a few in fast mode)."""
    return tasks.heldout_questions(n or by_mode(full=tasks.HELDOUT_QUESTIONS, fast=16))


# --- quoted answers of real models (from the course's seed documents; quoted, never run here) ----------------------

# name -> {"era": one of ERAS, "answer": the reply as quoted, "right": what the grader says of it}.
# Each entry is text quoted from the seed documents, shown as quoted; nothing here runs a model.
QUOTED_ANSWERS: dict[str, dict] = {}


def quoted_table():
    """The quoted answers as a table, each graded by the course's grader (the quote itself is not re-run)."""
    import pandas as pd

    rows = [{"model": name, "era": q["era"], "quoted answer": q["answer"],
             "right (graded)": tasks.STRAWBERRY.grade(q["answer"])} for name, q in QUOTED_ANSWERS.items()]
    return pd.DataFrame(rows, columns=["model", "era", "quoted answer", "right (graded)"])


# --- your model in llama.cpp ----------------------------------------------------------------------------------------

def llmlab_and_llama_cpp_tokens(model, gguf_path, question: str, max_new_tokens: int) -> tuple[list[int], list[int]]:
    """The greedy tokens of the reply to question from llmlab and from llama.cpp on the GGUF export of the model
    (the stop token <|end|> included when the reply ends with it)."""
    from llmlab.export import greedy_tokens_llama_cpp, load_gguf
    from llmlab.generation import generate

    tokenizer = course_tokenizer()
    ids = chat.prompt_ids(tokenizer, [{"role": "user", "content": question}])
    max_new_tokens = min(max_new_tokens, model.config.block_size - len(ids))  # llama.cpp stops at the window
    out = generate(model, torch.tensor([ids]), max_new_tokens, temperature=0, stop_tokens=_stop_ids(tokenizer))
    ours = out[0, len(ids):].tolist()
    llm = load_gguf(gguf_path, exact=True)
    try:
        theirs = greedy_tokens_llama_cpp(llm, ids, len(ours))
    finally:
        llm.close()
    return ours, theirs


# --- exercise -------------------------------------------------------------------------------------------------------

def check_spelled_prompt(fn, model=None, n: int | None = None) -> bool:
    """Exercise: fn(question) -> a prompt that puts the question's word spelled out (letters separated by spaces)
    above the question, without the dictionary. Checked on a few questions, then measured on the SFT model."""
    examples = tasks.heldout_questions(5)
    for q in examples:
        prompt = learner_call(fn, q.question, not_done=(
            "Not done yet: find the word between the double quotes, then write ' '.join(word) above the "
            "question."))
        if prompt is NOT_DONE:
            return False
        if not isinstance(prompt, str) or q.question not in prompt:
            print(f"✗ the prompt must be text that contains the question; got {prompt!r:.80}")
            return False
        if " ".join(q.word) not in prompt:
            print(f"✗ the prompt for {q.word!r} does not spell it out as {' '.join(q.word)!r}: {prompt!r:.80}")
            return False
    questions = held_out(n)
    model = model or sft.sft_model()
    entry = LINEUP["SFT"]
    plain = accuracy_of(entry, model, questions, [q.question for q in questions])
    spelled = accuracy_of(entry, model, questions, [fn(q.question) for q in questions])
    print(f"✓ your prompt spells the word out. SFT model on {len(questions)} held-out questions: "
          f"{plain:.1%} plain, {spelled:.1%} with your spelling")
    return True
