"""The `pad` command line: train, merge, decode, eval.

Thin on purpose: each command parses its options and calls the library. torch and transformers are
imported inside the command bodies so that `pad --help` is instant.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="pad",
    help="Personalized alignment at decoding time: train a principle-conditioned reward model (PersRM), "
    "steer any LLM with it while decoding, and score the results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2):
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def friendly_errors(fn):
    """Turn the library's user errors into one line on stderr and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pad.errors import PadError

        try:
            return fn(*args, **kwargs)
        except PadError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            typer.secho("interrupted: results written so far are kept; rerun with --resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@friendly_errors
def train(
    config: Annotated[Optional[Path], typer.Option(help="A training recipe (YAML); see recipes/.")] = None,
):
    """Train a principle-conditioned PersRM with DPO + LoRA."""
    _fail("`pad train` is not available yet")


@app.command()
@friendly_errors
def merge(
    adapter: Annotated[Path, typer.Argument(help="A LoRA adapter folder written by `pad train`.")],
):
    """Fold a LoRA adapter into a standalone checkpoint and verify it."""
    _fail("`pad merge` is not available yet")


@app.command("eval")
@friendly_errors
def eval_(
    runs: Annotated[list[Path], typer.Argument(help="Run files written by `pad decode`.")],
):
    """Score decoding runs with reward models: per-dimension statistics, win rates, plots."""
    _fail("`pad eval` is not available yet")


def main():  # console-script entry point
    app(prog_name="pad")


if __name__ == "__main__":
    sys.exit(main())
