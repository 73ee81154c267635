"""Progress for long steps: a spinner with elapsed time on a terminal, plain lines otherwise (stderr)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

_console = Console(stderr=True)


def say(message: str) -> None:
    """A status line on stderr (stdout stays clean for --json)."""
    if _console.is_terminal:
        _console.print(message, highlight=False)
    else:
        print(message, file=sys.stderr, flush=True)


@contextmanager
def step(description: str) -> Iterator[None]:
    """Show `description` while the block runs; say how long it took."""
    started = time.monotonic()
    if _console.is_terminal:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=_console, transient=True
        ) as progress:
            progress.add_task(description, total=None)
            yield
        _console.print(f"[green]✓[/green] {description} ({time.monotonic() - started:.1f}s)", highlight=False)
    else:
        print(f"... {description}", file=sys.stderr, flush=True)
        yield
        print(f"    done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)


@contextmanager
def progress_bar(total: int | None, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when ``enabled`` and stderr is a terminal; otherwise a no-op."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
