"""The chat template: how a conversation becomes the token ids an assistant is trained on.

A conversation is a list of messages, `{"role": "system" | "user" | "assistant", "content": text}`. The course
writes it with the role tokens the tokenizer reserved at ids 1..4, and nothing else (no spaces, no newlines):

    <|endoftext|><|system|>You are helpful.<|end|><|user|>Spell "cat".<|end|><|assistant|>c a t<|end|>

The conversation opens with <|endoftext|> because the base model read it before every document: a chat starts
as a fresh document. Each message is its role token, its text, and <|end|>. To ask the model for a reply, the
text ends with `<|assistant|>` (the "generation prompt") and the model writes until it writes <|end|>.

CHAT_TEMPLATE is that rule as a Jinja template, the form `transformers` (`tokenizer.apply_chat_template`),
a GGUF file and llama.cpp store it in. `llmlab.tokenizer` attaches it to the course tokenizer, and
`chat_example` below builds the same ids message by message, with the loss mask: the loss is taken on the
assistant's tokens and its <|end|> (what the model must learn to write), never on the system or user text.

Messages are checked first (`check_messages`): an empty message, an unknown role, a role out of order or text
that contains a role token (a user typing "<|end|>" would otherwise forge a turn) are refused with a
CourseError. A chat longer than the context window is cut by `fit_to_window`: see there.
"""

from dataclasses import dataclass

from llmlab.checks import CourseError, check_positive_int

BOS = "<|endoftext|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END = "<|end|>"
SPECIAL_TEXTS = (BOS, *ROLE_TOKENS.values(), END)
ROLES = tuple(ROLE_TOKENS)

# One line, so what it renders is exactly the role tokens and the messages: no whitespace to get wrong.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


# --- checking a conversation --------------------------------------------------------------------------------

def check_messages(messages, *, last: str | None = None) -> list[dict]:
    """messages as a list of {"role", "content"} dicts, or a CourseError saying what is wrong.

    Rules: a system message may only come first; then user and assistant take turns, the user first.
    last="user" asks that the conversation end with the user (a prompt for a reply); last="assistant" that it
    end with the assistant (a training example).
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise CourseError(f"a conversation is a non-empty list of messages, not {messages!r:.60}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"} or "role" not in message \
                or "content" not in message:
            raise CourseError(f"message {i} must be a dict with the keys 'role' and 'content', not {message!r:.80}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise CourseError(f"message {i} has the unknown role {role!r}; the roles are {list(ROLES)}")
        if not isinstance(content, str):
            raise CourseError(f"message {i} ({role}) must hold text (a str), not {type(content).__name__}")
        if not content.strip():
            raise CourseError(f"message {i} ({role}) is empty: a message needs some text")
        forged = [t for t in SPECIAL_TEXTS if t in content]
        if forged:
            raise CourseError(f"message {i} ({role}) contains the special token {forged[0]}, which only the chat "
                              "template may write")
        checked.append({"role": role, "content": content})
    turns = [m["role"] for m in checked]
    if "system" in turns[1:]:
        raise CourseError(f"a system message may only come first (found one at message {turns.index('system', 1)})")
    dialogue = turns[1:] if turns[0] == "system" else turns
    for i, role in enumerate(dialogue):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise CourseError(f"user and assistant take turns, the user first: message "
                              f"{i + (len(turns) - len(dialogue))} should be {expected}, not {role}")
    if not dialogue:
        raise CourseError("the conversation has only a system message: add a user message")
    if last is not None and dialogue[-1] != last:
        raise CourseError(f"the conversation must end with a {last} message, not a {dialogue[-1]} one")
    return checked


# --- token ids and the loss mask -----------------------------------------------------------------------------

@dataclass
class ChatExample:
    ids: list[int]
    loss_mask: list[int]  # 1 where the token is one the model is trained to write (assistant text and its <|end|>)

    def inputs_and_targets(self) -> tuple[list[int], list[int]]:
        """(inputs, targets) for next-token training: targets are the next ids, -100 where no loss is taken."""
        targets = [t if m else -100 for t, m in zip(self.ids[1:], self.loss_mask[1:])]
        return self.ids[:-1], targets


def special_ids(tokenizer) -> dict[str, int]:
    """The ids of the chat's special tokens in tokenizer, by their text."""
    ids = dict(zip(SPECIAL_TEXTS, tokenizer.convert_tokens_to_ids(list(SPECIAL_TEXTS))))
    missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise CourseError(f"the tokenizer lacks the chat token(s) {missing}: use llmlab.tokenizer.course_tokenizer()")
    return ids


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def chat_example(tokenizer, messages, *, add_generation_prompt: bool = False) -> ChatExample:
    """The token ids of a conversation (exactly what CHAT_TEMPLATE + the tokenizer give) and its loss mask."""
    messages = check_messages(messages)
    special = special_ids(tokenizer)
    ids, mask = [special[BOS]], [0]
    for message in messages:
        trained = int(message["role"] == "assistant")
        content = _encode(tokenizer, message["content"])
        ids += [special[ROLE_TOKENS[message["role"]]], *content, special[END]]
        mask += [0] + [trained] * (len(content) + 1)  # the role token is given; the text and <|end|> are learned
    if add_generation_prompt:
        ids.append(special[ROLE_TOKENS["assistant"]])
        mask.append(0)
    return ChatExample(ids, mask)


def prompt_ids(tokenizer, messages, *, max_tokens: int | None = None) -> list[int]:
    """The ids that ask for the assistant's next reply: the conversation (ending with a user message) and
    <|assistant|>. With max_tokens, the chat is first cut to fit by `fit_to_window`."""
    messages = check_messages(messages, last="user")
    if max_tokens is not None:
        messages = fit_to_window(tokenizer, messages, max_tokens)
    return chat_example(tokenizer, messages, add_generation_prompt=True).ids


def render(messages, *, add_generation_prompt: bool = False) -> str:
    """The conversation as the text CHAT_TEMPLATE renders (for reading; the ids come from `chat_example`)."""
    messages = check_messages(messages)
    text = BOS + "".join(ROLE_TOKENS[m["role"]] + m["content"] + END for m in messages)
    return text + (ROLE_TOKENS["assistant"] if add_generation_prompt else "")


# --- chats longer than the context window ----------------------------------------------------------------------

def fit_to_window(tokenizer, messages, max_tokens: int) -> list[dict]:
    """The conversation cut to at most max_tokens prompt tokens (generation prompt included).

    The policy, the one most chat front-ends follow: keep the system message, keep the newest turns, drop the
    oldest exchanges (a user message with the assistant's reply to it) until the prompt fits. If the system
    message and the last user message alone do not fit, nothing sensible is left to cut: a CourseError says how
    long they are. The caller leaves room for the reply inside the window (max_tokens = window - reply room).
    """
    check_positive_int("max_tokens", max_tokens)
    messages = check_messages(messages, last="user")
    system = messages[:1] if messages[0]["role"] == "system" else []
    dialogue = messages[len(system):]
    while True:
        n = len(chat_example(tokenizer, system + dialogue, add_generation_prompt=True).ids)
        if n <= max_tokens:
            return system + dialogue
        if len(dialogue) == 1:
            what = "the system message and the last user message take" if system else "the last user message takes"
            raise CourseError(f"{what} {n} tokens alone; the model reads at most {max_tokens} here: "
                              "shorten the message")
        dialogue = dialogue[2:]  # the oldest exchange: a user message and its reply
