"""Constrained decoding: the model may only write text of a given form, so every answer parses.

A `Pattern` is a short list of pieces, each either fixed text (`Literal`) or a run of characters from a set
(`Chars`, with a least and a most). Two patterns serve the course:

    NUMBER              one digit                                     "3"
    NUMBER_IN_SENTENCE  "There are " and one digit                    "There are 3"
    JSON_ANSWER         {"word": "<a-z>", "letter": "<a-z>", "count": <a digit>}

Two engines run the same pattern:

  * `constrained_replies` (llmlab): at every step the logits of every token that would take the text out of the
    pattern are set to -inf before the next token is chosen (greedy or sampled). A token is allowed when its text
    keeps the reply a prefix of the pattern AND the pattern can still be finished in the tokens left, so the
    reply is always complete: it parses, whatever the model would have preferred.
  * `to_gbnf` writes the pattern as a GBNF grammar, the format llama.cpp constrains its sampler with
    (`llama_cpp_constrained_reply` on a GGUF export).

A pattern that cannot be finished within max_new_tokens is refused before anything is generated.
"""

import json
from dataclasses import dataclass
from functools import cached_property

import torch

from llmlab import chat
from llmlab.checks import CourseError, check_new_tokens, check_positive_int
from llmlab.generation import sample_next_token
from llmlab.gpt import KVCache

DIGITS = "0123456789"
LOWERCASE = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class Chars:
    allowed: str
    least: int
    most: int


class Pattern:
    """A sequence of Literal and Chars pieces, read left to right by a small automaton over characters.

    The state is (piece, characters of it read). A piece's characters must not overlap with what may follow it,
    so the automaton never has to guess where a run of characters ends (checked here).
    """

    def __init__(self, *pieces):
        if not pieces or not all(isinstance(p, (Literal, Chars)) for p in pieces):
            raise CourseError("a Pattern is one or more Literal(text) and Chars(allowed, least, most) pieces")
        for p in pieces:
            if isinstance(p, Chars):
                check_positive_int("least", p.least, minimum=0)
                check_positive_int("most", p.most, minimum=max(p.least, 1))
            elif not p.text:
                raise CourseError("a Literal needs some text")
        for a, b in zip(pieces, pieces[1:]):
            first_of_b = set(b.text[0]) if isinstance(b, Literal) else set(b.allowed)
            if isinstance(a, Chars) and set(a.allowed) & first_of_b:
                raise CourseError("a run of characters may not be followed by one of the same characters")
        self.pieces = pieces

    START = (0, 0)

    def step(self, state, char: str):
        """The state after reading char, or None when char leaves the pattern."""
        piece, done = state
        while piece < len(self.pieces):
            p = self.pieces[piece]
            if isinstance(p, Literal):
                if done < len(p.text):
                    return (piece, done + 1) if char == p.text[done] else None
            else:
                if done < p.most and char in p.allowed:
                    return piece, done + 1
                if done < p.least:
                    return None
            piece, done = piece + 1, 0  # this piece is complete: try the next one
        return None

    def read(self, state, text: str):
        for char in text:
            state = self.step(state, char)
            if state is None:
                return None
        return state

    def is_complete(self, state) -> bool:
        """Whether the text read so far is a whole answer (every remaining piece may be empty)."""
        piece, done = state
        for p in self.pieces[piece:]:
            needed = len(p.text) if isinstance(p, Literal) else p.least
            if done < needed:
                return False
            done = 0
        return True

    def matches(self, text: str) -> bool:
        state = self.read(self.START, text)
        return state is not None and self.is_complete(state)

    def longest(self) -> int:
        """The most characters a text of the pattern has: with that many tokens (each at least one character)
        plus one for the stop token, any sampler held to the pattern finishes it."""
        return sum(len(p.text) if isinstance(p, Literal) else p.most for p in self.pieces)

    def example(self) -> str:
        """The shortest text of the pattern (its first allowed characters)."""
        return "".join(p.text if isinstance(p, Literal) else p.allowed[0] * max(p.least, 1) for p in self.pieces)


# One digit: no word of the course's dictionary (at most 12 letters) holds a letter ten times. With two digits
# allowed, a model that wants to go on after "There are 2" (with " 'r's") is offered only a digit or the end,
# and writes "00" for strawberry (measured on the SFT model).
NUMBER = Pattern(Chars(DIGITS, 1, 1))
# the number inside the sentence the SFT data taught ("There are 3 'r's in ..."), cut after the number
NUMBER_IN_SENTENCE = Pattern(Literal("There are "), Chars(DIGITS, 1, 1))
# The count is one digit here too, and JSON forbids a leading zero ("05" does not parse).
JSON_ANSWER = Pattern(Literal('{"word": "'), Chars(LOWERCASE, 1, 40), Literal('", "letter": "'),
                      Chars(LOWERCASE, 1, 1), Literal('", "count": '), Chars(DIGITS, 1, 1), Literal("}"))


def parse_json_answer(text: str) -> dict | None:
    """{"word", "letter", "count"} read from a JSON answer; None when it does not parse or lacks a key."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict) or set(value) != {"word", "letter", "count"}:
        return None
    return value


# --- the pattern over a tokenizer's tokens --------------------------------------------------------------------------

class TokenConstraint:
    """Which tokens may come next, for a pattern and a tokenizer.

    The answer depends only on the automaton's state (and the tokens left), so it is worked out once per state
    and kept: a reply of 20 tokens costs 20 dictionary look-ups after the first replies.
    """

    def __init__(self, pattern: Pattern, tokenizer, stop_id: int):
        self.pattern, self.stop_id = pattern, stop_id
        special = set(getattr(tokenizer, "all_special_ids", []))
        texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        # special tokens and pieces of a character split over tokens never belong to a pattern's text
        self.texts = {i: t for i, t in enumerate(texts) if t and i not in special and "\ufffd" not in t}
        self.vocab_size = len(tokenizer)
        self._next: dict = {}
        self._fewest: dict = {}

    def next_states(self, state) -> dict[int, tuple]:
        """token id -> the state after it, for every token that keeps the text inside the pattern."""
        if state not in self._next:
            self._next[state] = {i: s for i, t in self.texts.items()
                                 if (s := self.pattern.read(state, t)) is not None}
        return self._next[state]

    def fewest_tokens(self, state) -> int:
        """The fewest tokens that finish the pattern from state (0 when it is complete). Every token reads at
        least one character, so the states only move forward and the recursion ends."""
        if state not in self._fewest:
            if self.pattern.is_complete(state):
                self._fewest[state] = 0
            else:
                options = [self.fewest_tokens(s) for s in set(self.next_states(state).values())]
                self._fewest[state] = 1 + min(options) if options else 10**9
        return self._fewest[state]

    def allowed(self, state, tokens_left: int) -> tuple[list[int], list[tuple]]:
        """(token ids, their next states) allowed with tokens_left tokens to go; the stop token (state None)
        once the text is complete. Only tokens after which the pattern can still be finished in time."""
        ids, states = [], []
        if self.pattern.is_complete(state):
            ids.append(self.stop_id)
            states.append(None)
        for token, after in self.next_states(state).items():
            if self.fewest_tokens(after) <= tokens_left - 1:
                ids.append(token)
                states.append(after)
        return ids, states

    @cached_property
    def fewest_from_start(self) -> int:
        return self.fewest_tokens(self.pattern.START)


def check_budget(constraint: TokenConstraint, max_new_tokens: int) -> None:
    need = constraint.fewest_from_start
    if need > max_new_tokens:
        raise CourseError(f"max_new_tokens={max_new_tokens} is too few: the shortest text of this pattern is "
                          f"{need} tokens of this tokenizer (e.g. {constraint.pattern.example()!r}); "
                          f"allow at least {need}")


@torch.inference_mode()
def constrained_generate(model, constraint: TokenConstraint, prompts: list[list[int]], max_new_tokens: int,
                         *, temperature: float = 0.0, generator: torch.Generator | None = None) -> list[list[int]]:
    """New token ids for each prompt (token ids), every reply inside the pattern and complete (the stop token
    is left out). Batched like `generation.generate_batch`: left padding, one KV cache, finished rows kept in
    the batch (their tokens ignored), since a constrained reply is short."""
    max_new_tokens = check_new_tokens("max_new_tokens", max_new_tokens, minimum=1)
    check_budget(constraint, max_new_tokens)
    if not prompts or any(not isinstance(p, (list, tuple)) or not p for p in prompts):
        raise CourseError("constrained_generate needs a non-empty list of prompts, each a non-empty list of token ids")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > model.config.block_size:
        raise CourseError(f"a prompt of {longest} tokens and {max_new_tokens} new ones do not fit the context window "
                          f"of {model.config.block_size}: shorten the prompt or ask for fewer tokens")
    pad = torch.tensor([longest - len(p) for p in prompts])
    idx = torch.tensor([[0] * (longest - len(p)) + list(p) for p in prompts])
    was_training = model.training
    model.eval()
    try:
        cache = KVCache()
        logits, _ = model(idx, cache=cache, pad_lengths=pad)
        states = [Pattern.START] * len(prompts)
        new: list[list[int]] = [[] for _ in prompts]
        for step in range(max_new_tokens):
            last = logits[:, -1, :].float()
            masked = torch.full_like(last, float("-inf"))
            options = []
            for row, state in enumerate(states):
                if state is None:  # finished: any token, ignored
                    masked[row, constraint.stop_id] = 0.0
                    options.append(None)
                    continue
                ids, after = constraint.allowed(state, max_new_tokens - step)
                masked[row, ids] = last[row, ids]
                options.append(dict(zip(ids, after)))
            chosen = sample_next_token(masked, temperature, generator=generator)
            for row, token in enumerate(chosen.tolist()):
                if options[row] is None:
                    continue
                states[row] = options[row][token]
                if states[row] is not None:
                    new[row].append(token)
                    if not constraint.next_states(states[row]):  # complete, and nothing may follow
                        states[row] = None
            if all(s is None for s in states):
                break
            logits, _ = model(chosen.view(-1, 1), cache=cache, pad_lengths=pad)
        return new
    finally:
        model.train(was_training)


def constrained_replies(model, tokenizer, constraint: TokenConstraint, prompts, *, max_new_tokens: int = 40,
                        temperature: float = 0.0, generator=None) -> list[str]:
    """The model's reply to each prompt (a question, or chat messages), restricted to the constraint's pattern."""
    if isinstance(prompts, (str, dict)) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise CourseError(f"constrained_replies takes a non-empty list of prompts, not {type(prompts).__name__}")
    ids = [chat.prompt_ids(tokenizer, [{"role": "user", "content": p}] if isinstance(p, str) else p)
           for p in prompts]
    new = constrained_generate(model, constraint, ids, max_new_tokens, temperature=temperature, generator=generator)
    return [tokenizer.decode(n) for n in new]


# --- the same pattern as a GBNF grammar, for llama.cpp ---------------------------------------------------------------

def _gbnf_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _gbnf_class(allowed: str) -> str:
    if allowed == LOWERCASE:
        return "[a-z]"
    if allowed == DIGITS:
        return "[0-9]"
    return "[" + "".join("\\" + c if c in "]\\-^" else c for c in allowed) + "]"


def to_gbnf(pattern: Pattern) -> str:
    """The pattern as a GBNF grammar (llama.cpp's format): one rule, `root`, the pieces in order."""
    parts = []
    for p in pattern.pieces:
        if isinstance(p, Literal):
            parts.append(_gbnf_string(p.text))
        else:
            parts.append(_gbnf_class(p.allowed) + ("" if p.least == p.most == 1 else f"{{{p.least},{p.most}}}"))
    return "root ::= " + " ".join(parts) + "\n"


def llama_cpp_constrained_reply(llm, prompt_ids: list[int], pattern: Pattern, *, max_tokens: int | None = None) -> str:
    """llama.cpp's greedy reply to prompt_ids (a chat prompt's token ids), its sampler held to the pattern by the
    GBNF grammar. llama.cpp's grammar does not plan for the tokens left: a reply it could not finish within
    max_tokens (by default pattern.longest() + 1, always enough) is a CourseError, never a half answer."""
    import llama_cpp

    from llmlab.export import llama_cpp_positions

    max_tokens = pattern.longest() + 1 if max_tokens is None else max_tokens
    max_tokens = check_new_tokens("max_tokens", max_tokens, minimum=1)
    if len(prompt_ids) + max_tokens > llama_cpp_positions(llm):
        raise CourseError(f"a prompt of {len(prompt_ids)} tokens and {max_tokens} new ones do not fit the "
                          f"{llama_cpp_positions(llm)} positions of this model")
    grammar = llama_cpp.LlamaGrammar.from_string(to_gbnf(pattern), verbose=False)
    llm.reset()
    out = llm.create_completion(prompt=list(prompt_ids), grammar=grammar, max_tokens=max_tokens, temperature=0.0,
                                top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
    text = out["choices"][0]["text"]
    if not pattern.matches(text):
        raise CourseError(f"the grammar was not finished within max_tokens={max_tokens} (the model wrote "
                          f"{text[:60]!r}); allow more tokens")
    return text
