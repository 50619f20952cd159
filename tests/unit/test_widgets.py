import ipywidgets

from llmlab import widgets


def test_controls_draw_once_then_on_every_change(capsys):
    seen = []

    def show(n, word):
        seen.append((n, word))
        return f"{word} x{n}"

    n, word = widgets.slider("n", 2, 1, 5), widgets.text_box("word", "berry")
    box = widgets.controls(show, n=n, word=word)
    n.value = 4
    word.value = "straw"
    assert seen == [(2, "berry"), (4, "berry"), (4, "straw")]
    assert isinstance(box, ipywidgets.VBox)


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
