"""The ``visionloop`` command line: one Typer sub-app per group, one error policy.

Every module here imports only light things at top level; heavy libraries (ultralytics,
onnxruntime, mlflow) are imported inside the command that needs them, so ``--help`` is fast.
"""

from __future__ import annotations

import sys

import typer

from .. import __version__
from ..errors import VisionloopError
from . import data, demo, inbox, label, loop, models, monitor, promotion, serve, sweep, train, workflow
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
app.command("sweep")(sweep.sweep)
app.command("serve")(serve.serve)
app.command("monitor")(monitor.monitor)
app.command("loop")(loop.loop)
app.command("demo")(demo.demo)
app.command("report")(workflow.report)
app.command("init")(workflow.init)


class _Flags:
    """Root options the error policy in :func:`main` needs after the command has failed."""

    debug = False


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
    _Flags.debug = debug


def _one_line(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors become one line on stderr and a non-zero exit, never a traceback.

    Usage errors (unknown command or option, bad value) keep click's message and exit code 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _Flags.debug = False
    try:
        rv = app(args=args, prog_name="visionloop", standalone_mode=False)
        return rv if isinstance(rv, int) else 0  # typer returns Exit's code here
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _one_line("aborted")
        return 130
    except typer.TyperException as exc:  # typer's (vendored) click errors: usage, bad parameter
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            _one_line(f"error: {exc.format_message()}")
        return exc.exit_code
    except VisionloopError as exc:
        if _Flags.debug:
            raise
        _one_line(f"error: {exc}")
        return exc.exit_code
    except ConnectionError as exc:  # registry.TrackingUnavailableError: the server is down, not a bug
        if _Flags.debug:
            raise
        _one_line(f"error: {exc}")
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        if _Flags.debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        _one_line(f"error: {type(exc).__name__}: {msg} (run with --debug for details)")
        return 1


def run() -> None:
    sys.exit(main())
