"""The ``visionloop`` command line: one Typer sub-app per group, one error policy.

Every module here imports only light things at top level; heavy libraries (ultralytics,
onnxruntime, mlflow) are imported inside the command that needs them, so ``--help`` is fast.
"""

from __future__ import annotations

import sys

import click
import typer

from .. import __version__
from ..errors import VisionloopError
from . import data, demo, inbox, label, loop, models, monitor, promotion, serve, train, workflow
from .console import err_console

app = typer.Typer(
    name="visionloop",
    help="Continuous training for computer-vision models: data → train → serve → capture → label → retrain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data.app.command("inbox")(inbox.inbox)
app.add_typer(data.app, name="data")
for _name in ("compare", "promote", "rollback"):
    models.app.command(_name)(getattr(promotion, _name))
app.add_typer(models.app, name="models")
app.add_typer(label.app, name="label")
app.command("train")(train.train)
app.command("serve")(serve.serve)
app.command("monitor")(monitor.monitor)
app.command("loop")(loop.loop)
app.command("demo")(demo.demo)
app.command("report")(workflow.report)
app.command("init")(workflow.init)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"visionloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """visionloop: the continuous-training loop as one CLI."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors become one line on stderr and a non-zero exit, never a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = app(args=args, prog_name="visionloop", standalone_mode=False)
        return rv if isinstance(rv, int) else 0  # click returns typer.Exit's code here
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except VisionloopError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        err_console.print(f"error: {type(exc).__name__}: {msg} (run with --debug for details)",
                          markup=False, highlight=False, soft_wrap=True)
        return 1


def run() -> None:
    sys.exit(main())
