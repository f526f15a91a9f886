"""What commands print: tables on a terminal, JSON or YAML on request, and in a pipe the
formats scripts read (a record as JSON, a list as tab-separated rows); progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import yaml  # type: ignore[import-untyped]
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

FORMATS = ("table", "json", "yaml")
F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_HELP = (
    "table, json or yaml. Default: table on a terminal; in a pipe a record is JSON and a list "
    "is tab-separated rows (so `| jq` and `| cut -f1` work)"
)


def output_option(f: F) -> F:
    return click.option(
        "-o", "--output", "fmt", type=click.Choice(FORMATS), default=None, help=OUTPUT_HELP
    )(f)


def _terminal() -> bool:
    return sys.stdout.isatty()


def _serialise(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, default=str) + "\n"
    text: str = yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False)
    return text


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def record(data: dict[str, Any], fmt: str | None, fields: Sequence[str] | None = None) -> None:
    """One object: as a table, its `fields` (all when None); JSON and YAML hold all of it."""
    fmt = fmt or ("table" if _terminal() else "json")
    if fmt != "table":
        sys.stdout.write(_serialise(data, fmt))
        return
    keys = list(data) if fields is None else [k for k in fields if k in data]
    if not _terminal():  # a table in a pipe: `field<TAB>value` lines
        for k in keys:
            sys.stdout.write(f"{k}\t{_cell(data[k])}\n")
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k in keys:
        table.add_row(k, _cell(data[k]))
    Console().print(table)


def rows(
    items: list[dict[str, Any]], fmt: str | None, columns: Sequence[tuple[str, str]], empty: str
) -> None:
    """A list: `columns` are (key, heading). In a pipe, a table is tab-separated rows with no
    heading; JSON and YAML hold the whole objects."""
    fmt = fmt or "table"
    if fmt != "table":
        sys.stdout.write(_serialise(items, fmt))
        return
    if not items:
        click.echo(empty, err=True)
        return
    if not _terminal():
        for item in items:
            sys.stdout.write("\t".join(_cell(item.get(k)) for k, _ in columns) + "\n")
        return
    table = Table(header_style="bold")
    for i, (_, heading) in enumerate(columns):  # the first column, an id, is never cut
        table.add_column(heading, no_wrap=i == 0, overflow="fold")
    for item in items:
        table.add_row(*(_cell(item.get(k)) for k, _ in columns))
    Console().print(table)


def note(text: str) -> None:
    """A line for the person at the terminal (stderr: stdout is the data)."""
    click.echo(text, err=True)


class Step:
    """What a running `progress` shows; `update` changes its words."""

    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def update(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=text)  # type: ignore[arg-type]

    def done(self, text: str) -> None:
        """The last words: on the finished line, or (no terminal) a line of their own."""
        if self._progress is None:
            note(text)
        else:
            self.update(text)


@contextmanager
def progress(text: str) -> Iterator[Step]:
    """A spinner with the time taken, on stderr when it is a terminal; else the line once."""
    console = Console(stderr=True)
    if not console.is_terminal:
        note(text)
        yield Step(None, None)
        return
    bar = Progress(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    )
    with bar:
        task = bar.add_task(text, total=1)
        try:
            yield Step(bar, task)
        except BaseException:
            bar.update(task, description=f"{bar.tasks[0].description} [red](stopped)")
            raise
        bar.update(task, completed=1)


@contextmanager
def transfer(text: str) -> Iterator[Callable[[int, int | None], None]]:
    """A byte count's progress bar on stderr when it is a terminal; yields what the SDK's
    transfers tell their progress (`tether.sdk.calls.Progress`)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda done, total: None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=console)  # fmt: skip
    with bar:
        task = bar.add_task(text, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
