"""llmlab.progress: a live tqdm bar, or (headless) one final text line that a saved notebook keeps."""

from llmlab import progress


def test_headless_bar_prints_only_its_final_state(monkeypatch, capsys):
    monkeypatch.setenv("LLMLAB_HEADLESS", "1")
    for _ in progress.progress_bar(range(40), desc="steps"):
        pass
    bar = progress.progress_bar(total=10, desc="pairs")
    bar.update(10)
    bar.close()
    bar.close()  # a second close prints nothing more
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("steps: 100%") and "40/40" in lines[0]
    assert lines[1].startswith("pairs: 100%") and "10/10" in lines[1]


def test_headless_bar_respects_disable_and_leave(monkeypatch, capsys):
    monkeypatch.setenv("LLMLAB_HEADLESS", "1")
    for _ in progress.progress_bar(range(5), disable=True):
        pass
    for _ in progress.progress_bar(range(5), leave=False):
        pass
    assert capsys.readouterr().out == ""


def test_live_bar_is_tqdm_auto(monkeypatch):
    monkeypatch.delenv("LLMLAB_HEADLESS", raising=False)
    bar = progress.progress_bar(range(3))
    assert not isinstance(bar, progress.FinalLineBar)
    bar.close()


def test_headless_bar_that_overshoots_its_plan_still_shows_a_total(monkeypatch, capsys):
    monkeypatch.setenv("LLMLAB_HEADLESS", "1")
    bar = progress.progress_bar(total=100, desc="pairs", unit="pair")
    bar.update(120)  # more than planned
    bar.close()
    line = capsys.readouterr().out.strip()
    assert line.startswith("pairs: 100%") and "120/120" in line
