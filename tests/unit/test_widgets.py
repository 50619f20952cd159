import ipywidgets

from llmlab import widgets


def test_controls_draw_once_then_on_every_change(capsys):
    seen = []

    def show(n, word):
        seen.append((n, word))
        return f"{word} x{n}"

    n, word = widgets.slider("n", 2, 1, 5), widgets.text_box("word", "berry")
    assert widgets.controls(show, n=n, word=word) is None  # displayed once, not displayed and returned
    n.value = 4
    word.value = "straw"
    assert seen == [(2, "berry"), (4, "berry"), (4, "straw")]


def test_controls_display_one_box_and_print_text_as_text(capsys, monkeypatch):
    shown = []
    monkeypatch.setattr(widgets, "display", shown.append)
    widgets.controls(lambda word: f"{word}\nberry", word=widgets.text_box("word", "straw"))
    assert len(shown) == 1 and isinstance(shown[0], ipywidgets.VBox)
    assert "straw\nberry\n" in capsys.readouterr().out  # printed: a real line break, not the repr 'straw\\nberry'


def test_bad_input_is_a_one_line_message_not_a_traceback(capsys):
    def lookup(word):
        if word not in {"king", "queen"}:
            raise KeyError(f"unknown word {word!r}; close matches: ['king']")
        return word

    box_input = widgets.text_box("word", "king")
    widgets.controls(lookup, word=box_input)
    capsys.readouterr()
    box_input.value = "kingg"
    out = capsys.readouterr().out
    assert "⚠ unknown word 'kingg'; close matches: ['king']" in out
    assert "Traceback" not in out


def test_slider_kinds_follow_their_numbers():
    assert isinstance(widgets.slider("k", 5, 1, 50), ipywidgets.IntSlider)
    assert isinstance(widgets.slider("t", 0.8, 0.0, 2.0, 0.05), ipywidgets.FloatSlider)
    assert widgets.dropdown("p", ["a", "b"]).value == "a"


def test_any_error_of_the_callback_is_one_line_in_the_output(capsys):
    def fails(kind):
        if kind == "index":
            return "abc"[10]
        if kind == "none":
            return None.lower()
        if kind == "course":
            from llmlab.checks import CourseError
            raise CourseError("max_new_tokens must be a whole number >= 0 and <= 10,000, not 10**9")
        return "fine"

    kind = widgets.dropdown("kind", ["fine", "index", "none", "course"])
    widgets.controls(fails, kind=kind)
    for value, line in [("index", "⚠ IndexError: string index out of range"),
                        ("none", "⚠ AttributeError: 'NoneType' object has no attribute 'lower'"),
                        ("course", "⚠ max_new_tokens must be a whole number >= 0 and <= 10,000, not 10**9")]:
        capsys.readouterr()
        kind.value = value
        out = capsys.readouterr().out
        assert line in out and "Traceback" not in out
        assert len([row for row in out.splitlines() if "⚠" in row]) == 1
