"""What every auto-CSC command line shares: --version, rich output and one-line errors."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from runtime.errors import CscError
from runtime.version import __version__

console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"auto-csc {__version__}")
        raise typer.Exit()


VersionOption = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")


def choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A string Enum typer shows as a choice list, built from the tuple that defines the values elsewhere."""
    return Enum(name, {v: v for v in values}, type=str)


def make_app(help_text: str) -> typer.Typer:
    """A multi-command app with --version on the group."""
    app = typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_show_locals=False,
                      add_completion=False)

    @app.callback()
    def _root(version: bool = VersionOption) -> None:  # noqa: ARG001 - handled by the eager callback
        pass

    return app


def entry(app: typer.Typer) -> Callable[[], None]:
    """A console-script entry point: a CscError, or a bad option or argument, becomes one red line and exit code 2
    (a CscError's `exit_code`), never a traceback or typer's usage box (scripts and people read the same line)."""
    usage_error = _click_exception()

    def main() -> None:
        try:
            code = app(standalone_mode=False)
        except CscError as err:
            _fail(str(err), err.exit_code)
        except usage_error as err:
            message = err.format_message()
            if not message:  # a command group called without a command: its help was printed
                sys.exit(err.exit_code)
            context = getattr(err, "ctx", None)
            _fail(message + (f" — see `{context.command_path} --help`" if context is not None else ""), err.exit_code)
        except typer.Abort:
            _fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(n) comes back as n

    return main


def check_outputs(outputs: dict[str, Path | None], inputs: Iterable[tuple[str, str | Path]] = ()) -> None:
    """Every output file a file of its own, neither an input nor a folder, and writable where it is
    (`check_writable`): checked before the work (csc-run's overlay video written over its input counted the first
    frames of a file being replaced; two CSVs on one path interleave; a summary, a report or a chart onto a folder
    failed only after the whole run)."""
    seen = {Path(path).resolve(): flag for flag, path in inputs}
    for flag, path in outputs.items():
        if path is None:
            continue
        if path.is_dir():
            raise CscError(f"{flag} names a folder", path=path, fix="name a file, e.g. one inside that folder")
        if (other := seen.setdefault(path.resolve(), flag)) != flag:
            raise CscError(f"{flag} and {other} name the same file", path=path, fix=f"give {flag} a file of its own")
        check_writable(path, flag)


def check_writable(path: Path, flag: str) -> None:
    """``path`` can be written or made where it is: the nearest of it and its folders that exists is that file or a
    folder, and this user may write in the folder. Checked before the work: a report under a file's name
    (``notes.txt/r.json``) or in a read-only folder failed only when it was written, after the whole run."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing != path and not existing.is_dir():
        raise CscError(f"{flag} lies inside a file, not a folder", path=existing, fix=f"give {flag} a path in a folder")
    if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK | os.X_OK):
        raise CscError("cannot write here (permission denied)", path=existing, fix=f"choose a writable {flag}")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _click_exception() -> type[Exception]:
    """click's ClickException, the base of every usage error: recent typer vendors click, older typer uses click
    itself, and typer.BadParameter derives from it either way."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def progress_bar():
    """The project's one progress-bar style: description, bar, n/N, rate, time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[progress.percentage]{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
