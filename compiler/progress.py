"""Progress of ``edgefleet compile``: one bar for the float model and one per profile, each
advancing as a pass finishes (or comes from the cache), quiet when stderr is not a terminal.

The compile pipeline talks to a :class:`compiler.pipeline.Reporter` (``step``, ``note``); a
reporter that also has the :class:`PassProgress` methods gets per-pass events: ``begin`` with
the number of passes a profile's candidates hold (an upper bound: the search stops at the
first candidate within the bound, and rebuilds one when it keeps a node in float), ``advance``
per pass run, ``finish`` with the outcome.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

if TYPE_CHECKING:
    from compiler.passes.base import PassContext
    from compiler.recipes import Recipe

FLOAT = "float model"


@runtime_checkable
class PassProgress(Protocol):
    def begin(self, tag: str, total: int) -> None: ...

    def advance(self, tag: str, done: str) -> None: ...

    def finish(self, tag: str, outcome: str) -> None: ...


class ProgressBars:
    """A reporter with a bar per profile; use as a context manager."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.fields[tag]:<24}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBars:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    # Reporter
    def step(self, message: str) -> None:
        tag, _, rest = message.partition(": ")
        if tag in self._tasks and rest:
            self._progress.update(self._tasks[tag], description=escape(rest))
        self._progress.console.print(f"[dim]•[/] {escape(message)}", soft_wrap=True)

    def note(self, message: str) -> None:
        self._progress.console.print(f"[yellow]![/] {escape(message)}", soft_wrap=True)

    # PassProgress
    def begin(self, tag: str, total: int) -> None:
        self._tasks[tag] = self._progress.add_task("waiting", total=max(total, 1), tag=tag)

    def advance(self, tag: str, done: str) -> None:
        task = self._tasks.get(tag)
        if task is None:
            return
        current = self._progress.tasks[_index(self._progress, task)]
        if current.total is not None and current.completed + 1 > current.total:
            self._progress.update(task, total=current.completed + 2)  # a rebuild: grow
        self._progress.update(task, advance=1, description=escape(done))

    def finish(self, tag: str, outcome: str) -> None:
        task = self._tasks.get(tag)
        if task is None:
            return
        current = self._progress.tasks[_index(self._progress, task)]
        self._progress.update(task, completed=current.total, description=escape(outcome))


def _index(progress: Progress, task: TaskID) -> int:
    return next(i for i, t in enumerate(progress.tasks) if t.id == task)


class _Silent:
    def begin(self, tag: str, total: int) -> None:
        pass

    def advance(self, tag: str, done: str) -> None:
        pass

    def finish(self, tag: str, outcome: str) -> None:
        pass


def tracker(reporter: object) -> PassProgress:
    """``reporter`` when it tracks passes, else a tracker that does nothing."""
    return reporter if isinstance(reporter, PassProgress) else _Silent()


def pass_count(recipe: Recipe) -> int:
    """The passes of every candidate of ``recipe`` (and of its float TFLite conversion), plus
    one for packing."""
    converter = len(recipe.float_pipeline.passes) if recipe.float_pipeline is not None else 0
    return sum(len(c.pipeline.passes) for c in recipe.candidates) + converter + 1


def observed(context: PassContext, bars: PassProgress, tag: str) -> PassContext:
    """``context`` whose pass runs advance ``tag``'s bar."""
    return replace(context, on_pass=lambda name: bars.advance(tag, name))
