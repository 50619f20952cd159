"""Show llmlab's own code in a notebook, so a notebook never copies a definition it can import."""

import inspect

from IPython.display import Code


def show_source(*objects) -> Code:
    """The source of functions, classes or modules, syntax-highlighted, one after another."""
    return Code("\n\n".join(inspect.getsource(obj) for obj in objects), language="python")
