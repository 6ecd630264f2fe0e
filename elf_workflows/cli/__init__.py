"""The ``elf-workflows`` command line: a thin skin over the Python API.

Each module of this package that defines ``register(app)`` adds its commands; they are found
automatically, so every part of the pipeline keeps its commands beside nothing else's.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings

import typer

from elf_workflows import __version__
from elf_workflows.errors import ElfWorkflowsError

app = typer.Typer(
    name="elf-workflows",
    help="Screen compressed metal sublattices as chemical templates for superhydrides.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"elf-workflows {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Screen compressed metal sublattices as chemical templates for superhydrides."""
    _state["debug"] = debug


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app; known errors become one ``error:`` line and exit 1."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        return int(code or 0)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - turned into one line
        import click

        if isinstance(exc, click.exceptions.UsageError):
            exc.show()
            return 2
        if isinstance(exc, click.exceptions.ClickException):
            typer.echo(f"error: {exc.format_message()}", err=True)
            return exc.exit_code
        if debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, ElfWorkflowsError):
            message = f"{type(exc).__name__}: {message}"
        typer.echo(f"error: {message}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
