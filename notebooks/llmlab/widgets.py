"""Widgets that work on ipywidgets 7.7 (what Colab ships) and on ipywidgets 8.

Only the parts of the API the two share are used: sliders, dropdowns, text boxes, buttons, Output,
HBox/VBox and `observe(names="value")`. `controls(fn, **widgets)` wires controls to a function whose output
(text or a figure) is redrawn whenever a control moves, and draws it once at the start. When a notebook is
executed headless (LLMLAB_HEADLESS=1, set by tools/run_notebooks.py), that first drawing goes into the cell's own
output, so the saved notebook shows a real result even where widgets do not render (GitHub, nbviewer).
"""

import contextlib
import os

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure

IPYWIDGETS_MAJOR = int(w.__version__.split(".")[0])
_WIDE = {"description_width": "initial"}


def slider(description, value, min, max, step=1, *, readout_format=None):
    """An IntSlider when every number is an int, otherwise a FloatSlider."""
    kind = w.IntSlider if all(isinstance(v, int) for v in (value, min, max, step)) else w.FloatSlider
    extra = {"readout_format": readout_format} if readout_format else {}
    return kind(value=value, min=min, max=max, step=step, description=description, style=_WIDE,
                continuous_update=False, **extra)


def log_slider(description, value, min_exponent, max_exponent, step=0.1):
    """A slider over powers of ten (parameter counts, learning rates)."""
    return w.FloatLogSlider(value=value, base=10, min=min_exponent, max=max_exponent, step=step,
                            description=description, style=_WIDE, continuous_update=False)


def dropdown(description, options, value=None):
    options = list(options)
    first = options[0][1] if isinstance(options[0], tuple) else options[0]
    return w.Dropdown(options=options, value=first if value is None else value,
                      description=description, style=_WIDE)


def text_box(description, value="", placeholder=""):
    return w.Text(value=value, placeholder=placeholder, description=description, style=_WIDE,
                  continuous_update=False, layout=w.Layout(width="60%"))


def controls(fn, **widgets):
    """Show `widgets` above the output of fn(**values); redraw it when any of them changes.

    fn returns what to show (a string, a figure, a table) or prints it.

    Errors that fn raises as ValueError or KeyError (an unknown word, say) are shown as a one-line message
    in the output instead of a traceback.
    """
    out = w.Output()

    def redraw(_change=None, into=out):
        """Draw fn's result into the Output widget, or into the cell itself when `into` is None."""
        values = {name: widget.value for name, widget in widgets.items()}
        if into is not None:
            into.clear_output(wait=True)
        with into if into is not None else contextlib.nullcontext():
            try:
                result = fn(**values)
            except (ValueError, KeyError) as error:
                message = error.args[0] if error.args else str(error)
                print(f"⚠ {message}")
                return
            if result is not None:
                display(result)
                if isinstance(result, Figure):
                    plt.close(result)  # shown once, in the output, not again by the inline backend

    for widget in widgets.values():
        widget.observe(redraw, names="value")
    box = w.VBox([w.HBox(list(widgets.values()), layout=w.Layout(flex_flow="row wrap")), out])
    display(box)
    # Headless, an Output widget's content is not saved as a cell output: draw the first result in the cell.
    redraw(into=None if os.environ.get("LLMLAB_HEADLESS") == "1" else out)
    return box
