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


def error_line(error: BaseException) -> str:
    """An exception as the one line a widget shows: the message alone for a refusal the course expected
    (CourseError, ValueError, KeyError: an unknown word, an empty prompt), else `TypeName: message`."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    message = " ".join(str(message).split()) or "(no message)"  # one line, whatever the error held
    if len(message) > 300:
        message = message[:300] + " ..."
    return f"⚠ {message}" if isinstance(error, (ValueError, KeyError)) else f"⚠ {type(error).__name__}: {message}"


def controls(fn, **widgets) -> None:
    """Show `widgets` above the output of fn(**values); redraw it when any of them changes.

    fn returns what to show (text is printed; a figure or a table is displayed) or prints it itself.
    controls displays the widgets and returns None, so a cell that ends with it shows them once.

    Any error fn raises is shown as one line in the output (`⚠ message`; `⚠ TypeName: message` for an error
    the course did not expect), never as a traceback: a widget is for trying things, and a wrong value must not
    bury the controls under a page of library internals.
    """
    out = w.Output()

    def redraw(_change=None, into=out):
        """Draw fn's result into the Output widget, or into the cell itself when `into` is None."""
        values = {name: widget.value for name, widget in widgets.items()}
        if into is not None:
            into.clear_output(wait=True)
        with into if into is not None else contextlib.nullcontext():
            figures_before = set(plt.get_fignums())
            try:
                result = fn(**values)
            except Exception as error:  # noqa: BLE001  (any error: one line, never a traceback)
                print(error_line(error))
                for number in set(plt.get_fignums()) - figures_before:
                    plt.close(number)  # a figure the callback opened before failing is not shown later
                return
            if isinstance(result, str):
                print(result)  # text as text, not its quoted repr with \n
            elif result is not None:
                display(result)
                if isinstance(result, Figure):
                    plt.close(result)  # shown once, in the output, not again by the inline backend

    for widget in widgets.values():
        widget.observe(redraw, names="value")
    box = w.VBox([w.HBox(list(widgets.values()), layout=w.Layout(flex_flow="row wrap")), out])
    display(box)
    # Headless, an Output widget's content is not saved as a cell output: draw the first result in the cell.
    redraw(into=None if os.environ.get("LLMLAB_HEADLESS") == "1" else out)
