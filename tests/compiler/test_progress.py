"""Progress bars of ``edgefleet compile``: a bar per profile advanced per pass on a terminal,
none when stderr is not one, and a plain reporter left alone."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from compiler.passes.base import PassContext
from compiler.pipeline import LogReporter
from compiler.progress import ProgressBars, observed, tracker


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, force_terminal=terminal, width=120), sink


def test_a_bar_per_profile_advances_per_pass_and_finishes() -> None:
    console, sink = _console(terminal=True)
    with ProgressBars(console) as bars:
        bars.begin("arm/cortex-m7", 2)
        bars.begin("raspberry-pi/4b", 3)
        context = observed(PassContext(workdir=Path()), bars, "arm/cortex-m7")
        assert context.on_pass is not None
        context.on_pass("torch_to_tflite")
        tasks = {t.fields["tag"]: t for t in bars._progress.tasks}
        assert tasks["arm/cortex-m7"].completed == 1
        assert tasks["raspberry-pi/4b"].completed == 0
        bars.advance("arm/cortex-m7", "quantize_tflite")
        bars.advance(
            "arm/cortex-m7", "quantize_tflite"
        )  # a rebuild: the bar grows, never overflows
        task = next(t for t in bars._progress.tasks if t.fields["tag"] == "arm/cortex-m7")
        assert task.total is not None and task.completed < task.total
        bars.finish("arm/cortex-m7", "packed int8-full-tflite")
        assert task.completed == task.total
    text = sink.getvalue()
    assert "arm/cortex-m7" in text and "raspberry-pi/4b" in text


def test_no_bars_when_not_a_terminal_but_steps_still_print() -> None:
    console, sink = _console(terminal=False)
    with ProgressBars(console) as bars:
        bars.begin("arm/cortex-m7", 2)
        bars.advance("arm/cortex-m7", "torch_to_tflite")
        bars.step("arm/cortex-m7: trying int8-full-tflite")
        bars.finish("arm/cortex-m7", "done")
    text = sink.getvalue()
    assert text == "• arm/cortex-m7: trying int8-full-tflite\n"


def test_a_plain_reporter_gets_a_silent_tracker() -> None:
    silent = tracker(LogReporter())
    silent.begin("x", 1)
    silent.advance("x", "pass")
    silent.finish("x", "done")
    assert tracker(ProgressBars(_console(False)[0])) is not silent
