import ast
import builtins

import pytest

from llmlab import tools
from llmlab.checks import CourseError
from llmlab.tools import (HOSTILE_CALLS, ToolError, answer_with_tool, find_tool_call, parse_tool_call,
                          run_tool_call, tool_call_text)


def test_good_calls_run():
    assert run_tool_call('count("strawberry", "r")') == 3
    assert run_tool_call("count('Mississippi', 's')") == 4
    assert run_tool_call('count("strawberry", "R")') == 3  # case does not matter, as in tasks.LetterCount
    assert run_tool_call('count("strawberry", "z")') == 0
    assert run_tool_call('spell("cat")') == "c a t"
    assert run_tool_call('  length("bookkeeper")  ') == 10


def test_the_call_a_model_is_taught_runs_and_round_trips():
    text = tool_call_text("strawberry", "r")
    assert text == 'count("strawberry", "r")'
    assert parse_tool_call(text) == tools.ToolCall("count", ("strawberry", "r"))
    assert run_tool_call(text) == 3


@pytest.mark.parametrize("what", list(HOSTILE_CALLS))
def test_every_hostile_call_is_refused(what):
    with pytest.raises(ToolError):
        run_tool_call(HOSTILE_CALLS[what])


def test_there_are_at_least_twenty_hostile_calls():
    assert len(HOSTILE_CALLS) >= 20


def test_nothing_outside_the_whitelist_is_executed(monkeypatch):
    """eval and exec are never called, for any call, good or hostile (ast.parse only parses: it uses compile with
    the flag that stops at the tree)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a forbidden builtin was called")

    calls = [*HOSTILE_CALLS.values(), 'count("strawberry", "r")']
    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, forbidden)
    for text in calls:
        try:
            run_tool_call(text)
        except ToolError:
            pass


def test_a_hostile_call_has_no_side_effect(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ('open("made.txt", "w")', '__import__("pathlib").Path("made.txt").touch()'):
        with pytest.raises(ToolError):
            run_tool_call(text)
    assert list(tmp_path.iterdir()) == []


def test_refusals_say_why():
    with pytest.raises(ToolError, match="not a tool"):
        run_tool_call('os.system("ls")')
    with pytest.raises(ToolError, match="takes 2 argument"):
        run_tool_call('count("strawberry")')
    with pytest.raises(ToolError, match="nested"):
        run_tool_call('count(spell("x"), "r")')
    with pytest.raises(ToolError, match="literal"):
        run_tool_call('count(word, "r")')
    with pytest.raises(ToolError, match="at most 40"):
        run_tool_call(HOSTILE_CALLS["a huge string"][:150] + '", "r")')
    with pytest.raises(ToolError, match="at most 200"):
        run_tool_call(HOSTILE_CALLS["a huge string"])
    with pytest.raises(ToolError, match="one letter"):
        run_tool_call('count("strawberry", "rr")')
    assert issubclass(ToolError, CourseError)


def test_a_call_is_found_in_a_reply():
    assert find_tool_call('Let me check. count("strawberry", "r") then') == 'count("strawberry", "r")'
    assert find_tool_call("There are 3 r's.") is None
    assert answer_with_tool('count("berry", "r")') == ('count("berry", "r")', 2, None)
    call, result, error = answer_with_tool('os.system("ls")')
    assert call == 'os.system("ls")' and result is None and "not a tool" in error
    assert answer_with_tool("no call here") == (None, None, "the reply holds no call")
    with pytest.raises(CourseError):
        find_tool_call(None)


def test_parse_refuses_non_text():
    for value in (None, 3, b'count("a", "a")', ["count"]):
        with pytest.raises(ToolError):
            parse_tool_call(value)


def test_the_module_never_uses_eval_or_exec():
    source = open(tools.__file__).read()
    names = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    assert not names & {"eval", "exec", "compile", "__import__"}
