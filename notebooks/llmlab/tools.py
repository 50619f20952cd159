"""Tool use, safely: a model writes a call such as `count("strawberry", "r")`; this module runs it, or refuses.

A model's text is untrusted input. So the call is never handed to `eval` or `exec`: it is parsed with Python's
own parser (`ast`) into a tree, and the tree must have exactly one shape,

    NAME(LITERAL, LITERAL, ...)

where NAME is one of the whitelisted TOOLS, the number of arguments is the tool's, and every argument is a plain
string or whole-number literal of the type the tool takes, short enough (MAX_ARGUMENT_CHARS). Anything else
(an unknown name, an attribute such as `os.system`, a nested call, a variable, an operator, a keyword argument,
a huge string, text too long to parse safely) is a `ToolError`, one sentence saying why, and nothing runs.

    run_tool_call('count("strawberry", "r")')          -> 3
    run_tool_call('__import__("os").system("ls")')      -> ToolError: ... not a tool ...
    answer_with_tool(model_reply)                       -> (call text, result or None, error or None)
"""

import ast
import re
from dataclasses import dataclass
from typing import Callable

from llmlab.checks import CourseError

MAX_CALL_CHARS = 200  # longer text is refused before it is parsed (deeply nested text can exhaust the parser)
MAX_ARGUMENT_CHARS = 40  # a word of the course has at most 40 letters


class ToolError(CourseError):
    """A refused tool call, explained in one sentence; nothing was run."""


@dataclass(frozen=True)
class Tool:
    """A whitelisted function: its name, the type of each argument, what it does, and the code that does it."""

    name: str
    arguments: tuple[type, ...]
    doc: str
    run: Callable


def _letter(letter: str) -> str:
    if len(letter) != 1 or not letter.isalpha():
        raise ToolError(f"the letter must be one letter, not {letter!r}")
    return letter.lower()


def _count(word: str, letter: str) -> int:
    return word.lower().count(_letter(letter))


def _spell(word: str) -> str:
    return " ".join(word)


TOOLS = {tool.name: tool for tool in (
    Tool("count", (str, str), 'count("strawberry", "r") -> 3: how many times a letter occurs in a word', _count),
    Tool("spell", (str,), 'spell("cat") -> "c a t": the letters of a word', _spell),
    Tool("length", (str,), 'length("cat") -> 3: how many letters a word has', len),
)}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: tuple

    def __str__(self) -> str:
        return f"{self.name}({', '.join(map(repr, self.arguments))})"


def _literal(node: ast.AST, position: int, expected: type, tool: Tool):
    where = f"argument {position + 1} of {tool.name}"
    if isinstance(node, ast.Call):
        raise ToolError(f"{where} is itself a call; nested calls are not run (give a literal value)")
    if not isinstance(node, ast.Constant):
        shown = ast.unparse(node)
        raise ToolError(f"{where} must be a literal {expected.__name__} such as \"strawberry\", not the "
                        f"expression {shown[:40]!r}")
    value = node.value
    if type(value) is not expected:  # bool is an int subclass: True is refused as a count, and bytes as text
        raise ToolError(f"{where} must be a {expected.__name__}, not the {type(value).__name__} {value!r:.40}")
    if isinstance(value, str) and len(value) > MAX_ARGUMENT_CHARS:
        raise ToolError(f"{where} has {len(value):,} characters; a tool takes at most {MAX_ARGUMENT_CHARS}")
    return value


def parse_tool_call(text) -> ToolCall:
    """The call written in text, checked against the whitelist; a ToolError (nothing runs) when it is not one."""
    if not isinstance(text, str):
        raise ToolError(f"a tool call is text, not {type(text).__name__}")
    text = text.strip()
    if not text:
        raise ToolError('there is no call: write one such as count("strawberry", "r")')
    if len(text) > MAX_CALL_CHARS:
        raise ToolError(f"the call is {len(text):,} characters long; at most {MAX_CALL_CHARS} are parsed")
    try:
        tree = ast.parse(text, mode="eval")  # parsing builds a tree; it runs nothing
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise ToolError(f"not a call that Python can read ({type(error).__name__}): {text[:60]!r}") from None
    call = tree.body
    if not isinstance(call, ast.Call):
        raise ToolError(f"not a function call: {text[:60]!r}; write one such as count(\"strawberry\", \"r\")")
    if not isinstance(call.func, ast.Name):
        raise ToolError(f"{ast.unparse(call.func)[:40]!r} is not a tool; the tools are {sorted(TOOLS)}")
    tool = TOOLS.get(call.func.id)
    if tool is None:
        raise ToolError(f"{call.func.id[:40]!r} is not a tool; the tools are {sorted(TOOLS)}")
    if call.keywords:
        raise ToolError(f"{tool.name} takes its arguments by position only, not by name")
    if any(isinstance(a, ast.Starred) for a in call.args):
        raise ToolError(f"{tool.name} takes literal arguments, not *unpacking")
    if len(call.args) != len(tool.arguments):
        raise ToolError(f"{tool.name} takes {len(tool.arguments)} argument(s), not {len(call.args)}: {tool.doc}")
    values = tuple(_literal(node, i, kind, tool) for i, (node, kind) in enumerate(zip(call.args, tool.arguments)))
    return ToolCall(tool.name, values)


def run_tool_call(text):
    """Parse text as a tool call and run it: the tool's result, or a ToolError (and nothing run)."""
    call = parse_tool_call(text)
    return TOOLS[call.name].run(*call.arguments)


# A call as a model writes it, somewhere in its reply: a name, then parentheses (no nested parentheses).
_CALL_IN_TEXT = re.compile(r"[A-Za-z_][\w.]*\s*\([^()]*\)")


def find_tool_call(reply: str) -> str | None:
    """The first thing in a model's reply that looks like a call, as written; None when there is none."""
    if not isinstance(reply, str):
        raise CourseError(f"a reply is text, not {type(reply).__name__}")
    found = _CALL_IN_TEXT.search(reply)
    return found.group(0) if found else None


def answer_with_tool(reply: str) -> tuple[str | None, object, str | None]:
    """(the call found in the reply, its result, why it was refused): what a tool-using assistant does with
    one turn of its model. A reply with no call, or a refused call, gives result None and the reason."""
    call = find_tool_call(reply)
    if call is None:
        return None, None, "the reply holds no call"
    try:
        return call, run_tool_call(call), None
    except ToolError as error:
        return call, None, str(error)


def tool_call_text(word: str, letter: str) -> str:
    """The call a tool-using assistant should write for a letter-count question (its SFT / few-shot answer)."""
    return str(ToolCall("count", (word, letter))).replace("'", '"')


# --- hostile calls, each refused (the notebook and the tests use this list) ----------------------------------------

HOSTILE_CALLS = {
    "import a module": '__import__("os").system("ls")',
    "a method of a module": 'os.system("rm -rf /")',
    "eval itself": 'eval("1 + 1")',
    "exec": 'exec("import os")',
    "open a file": 'open("/etc/passwd")',
    "an unknown function": 'delete("strawberry")',
    "a dunder attribute": '"".__class__.__mro__[1].__subclasses__()',
    "an attribute as the function": 'count.__globals__("x")',
    "too few arguments": 'count("strawberry")',
    "too many arguments": 'count("strawberry", "r", "x")',
    "a keyword argument": 'count(word="strawberry", letter="r")',
    "a nested call": 'count(spell("strawberry"), "r")',
    "a variable": 'count(word, "r")',
    "an expression": 'count("straw" + "berry", "r")',
    "string multiplication": 'count("r" * 10**9, "r")',
    "a huge string": 'count("' + "r" * 10_000 + '", "r")',
    "a long string": 'count("' + "r" * 41 + '", "r")',
    "a number where text goes": 'count(3, "r")',
    "True where text goes": 'length(True)',
    "bytes where text goes": 'count(b"strawberry", "r")',
    "a lambda": '(lambda: __import__("os"))()',
    "a list comprehension": '[count("a", "a") for _ in range(10**9)]',
    "two statements": 'count("a", "a"); import os',
    "deep nesting": "count(" * 150 + ")" * 150,
    "star arguments": 'count(*["strawberry", "r"])',
    "a subscript": 'count("strawberry"[0], "r")',
    "an f-string": 'count(f"{open(1)}", "r")',
    "not a call": "import os",
    "empty": "   ",
    "two letters": 'count("strawberry", "rr")',
}
