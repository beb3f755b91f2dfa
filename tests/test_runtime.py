"""jobs/runtime.py: the progress display of ``gather`` (issue 15, item 5)."""

from __future__ import annotations

import doctest
import io
import re

import pytest

from jobs import runtime
from jobs.runtime import _Progress, progress_line

# the stages each job shows, with the task counts of an x100 run (the widest lines a run prints)
JOBS = {
    "s1 tile index": ["s1 tile index"] * 238,
    "s4-s6": ["s4 weights"] * 238 + ["s6 units"] * 4123 + ["s4 write"] * 130 + ["s5 write"] * 130
             + ["s6 write"] * 130,
    "s9": ["s9 surface"] * 3 + ["s9 tables"] * 7 + ["s9 plan"] * 238 + ["s9 digest"] * 9
          + ["s9 s5 check"] * 130 + ["s9 s6 check"] * 130,
}


def test_progress_line_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(runtime.progress_line, "progress_line", globs={"progress_line": progress_line}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("label", sorted(JOBS))
def test_a_terminal_of_80_columns_gets_lines_that_never_wrap_and_say_the_label_once(label, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    stages = JOBS[label]
    out = Terminal()
    progress = _Progress(label, {f"k{i}": s for i, s in enumerate(stages)}, out, show=True)
    for i in range(len(stages)):
        progress.last = float("-inf")  # draw every update, not only every 0.2 s
        progress.finished(f"k{i}")
    draws = [d.replace("\x1b[K", "").rstrip("\n") for d in out.getvalue().split("\r") if d]
    assert len(draws) == len(stages) and out.getvalue().endswith("\n")
    assert max(len(d) for d in draws) <= 79, max(draws, key=len)
    assert all(d.count(label) == 1 for d in draws), [d for d in draws if d.count(label) != 1][:3]
    assert all(re.search(r" \d+\.\ds$", d) for d in draws)  # the elapsed seconds always stay
    assert all(d.isascii() for d in draws)


def test_each_stage_of_a_wait_shows_its_count_while_the_line_fits():
    line = progress_line("s4-s6", [("s4 weights", 238, 238), ("s6 units", 17, 4123), ("s4 write", 0, 130)], 3.0, 79)
    assert line == "  s4-s6  s4 weights 238/238  s6 units 17/4123  s4 write 0/130  3.0s"
    assert progress_line("s9", [("s9 plan", 1, 2)], 3.0, 79) == "  s9  plan 1/2  3.0s"


def test_not_a_terminal_gets_one_line_per_finished_stage():
    out = io.StringIO()
    progress = _Progress("s4-s6", {"a": "s4 weights", "b": "s6 units", "c": "s6 units"}, out, show=True)
    for key in "abc":
        progress.finished(key)
    lines = out.getvalue().splitlines()
    assert [re.sub(r"\s+", " ", line.split(" at ")[0].strip()) for line in lines] == \
        ["s4 weights 1 tasks done", "s6 units 2 tasks done"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
