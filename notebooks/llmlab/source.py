"""Show llmlab's own code in a notebook, so a notebook never copies a definition it can import."""

import inspect

from IPython.display import Code, display


def show_source(*objects) -> None:
    """Display the source of functions, classes or modules, syntax-highlighted, one after another."""
    display(Code("\n\n".join(inspect.getsource(obj) for obj in objects), language="python"))
