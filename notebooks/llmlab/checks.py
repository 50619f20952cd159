"""Argument checks at the doors of llmlab's public functions: one readable refusal instead of a deep traceback.

Every refusal is a `CourseError` (a ValueError, so existing `except ValueError` code and the widgets catch it)
whose message is one sentence naming the argument, the value it got and what would work:

    check_positive_int("max_new_tokens", 0)  ->  CourseError: max_new_tokens must be a whole number >= 1, not 0

The checks sit where an argument enters the package (a public function, a config's __post_init__), not on every
line inside it.
"""

import math
import numbers
import operator

# The most tokens (or characters) one call may generate: a few pages of text, seconds to a minute on a laptop.
# A typo such as 1_000_000_000 is refused at once instead of running for hours with no way to see progress.
MAX_NEW_TOKENS = 10_000


class CourseError(ValueError):
    """A refused argument, explained in one sentence."""


NOT_DONE = object()  # what learner_call returns when the learner's function gave no answer


def learner_call(fn, *args, not_done: str, name: str = "your function"):
    """Call an exercise's function (the learner's code) with args: its result, or NOT_DONE after one line on why.

    A function that still raises NotImplementedError prints not_done (the exercise's hint); any other error is the
    learner's bug, shown in one line ("✗ your function raised ..."), never as a traceback.
    """
    try:
        return fn(*args)
    except NotImplementedError:
        print(not_done)
    except Exception as error:  # the learner's code: its error in one line
        print(f"✗ {name} raised {type(error).__name__}: {error}")
    return NOT_DONE


def check_positive_int(name: str, value, *, minimum: int = 1, maximum: int | None = None) -> int:
    """value as an int in [minimum, maximum]; bools, floats and strings are refused (NumPy ints are fine)."""
    upper = f" and <= {maximum:,}" if maximum is not None else ""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # int, numpy.int64, a 0-d integer tensor; not 2.0, not "3"
    except TypeError:
        raise CourseError(f"{name} must be a whole number >= {minimum}{upper}, not {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        raise CourseError(f"{name} must be a whole number >= {minimum}{upper}, not {value!r}")
    return number


def check_new_tokens(name: str, value, *, minimum: int = 0) -> int:
    """How many tokens (or characters) to generate: a whole number from minimum to MAX_NEW_TOKENS."""
    return check_positive_int(name, value, minimum=minimum, maximum=MAX_NEW_TOKENS)


def check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                 strict_minimum: bool = False) -> float:
    """value as a finite float within the bounds (strict_minimum: value > minimum)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise CourseError(f"{name} must be a finite number, not {value!r}")
    low_fails = minimum is not None and (value <= minimum if strict_minimum else value < minimum)
    if low_fails or (maximum is not None and value > maximum):
        low = "" if minimum is None else f"{'>' if strict_minimum else '>='} {minimum}"
        high = "" if maximum is None else f"<= {maximum}"
        raise CourseError(f"{name} must be {' and '.join(b for b in (low, high) if b)}, not {value!r}")
    return float(value)


def check_text(name: str, value, *, allow_empty: bool = False, max_chars: int | None = None) -> str:
    """value as a str (not None, not a number), non-empty unless allowed, at most max_chars long."""
    if not isinstance(value, str):
        raise CourseError(f"{name} must be text (a str), not {type(value).__name__} {value!r:.60}")
    if not allow_empty and not value.strip():
        raise CourseError(f"{name} is empty: type some text")
    if max_chars is not None and len(value) > max_chars:
        raise CourseError(f"{name} has {len(value):,} characters; at most {max_chars:,} are accepted here")
    return value
