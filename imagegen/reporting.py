"""How the ``imagegen`` command reports failure: one line on stderr and an exit code.

Exit codes: 0 success; 1 a failure that is not the input's fault (a write failing for lack of space,
out of memory, a bug); 2 bad input (a missing or damaged file, a bad option or config value: the
message says what to change); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, as a job scheduler
stops a job: handled like Ctrl-C, so temporaries are cleared and a run's lock given up on the way
out). ``imagegen --debug COMMAND`` shows the traceback of any error instead of the one line.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import signal
import sys
from collections.abc import Iterator

import click

from .errors import ImagegenError, WriteError

OK, FAILED, BAD_INPUT, INTERRUPTED, TERMINATED = 0, 1, 2, 130, 143
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: `imagegen` alone


def fail(message: str, code: int) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``. Progress bars still
    open are closed first, so that the message starts a line of its own."""
    tqdm = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()
    click.echo("error: " + " ".join(str(message).split()), err=True)
    sys.exit(code)


class OneLineGroup(click.Group):
    """A click group whose usage errors (unknown option, bad value) print one ``error:`` line, with
    a pointer to ``--help``, instead of click's three-line usage block; exit code 2 as click's."""

    def main(self, args=None, prog_name=None, **extra):
        try:
            with _sigterm_interrupts():
                code = super().main(args, prog_name, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            fail(e.format_message() + hint, e.exit_code)
        except click.Abort as e:  # Ctrl-C or SIGTERM outside a command body (click wraps it)
            if isinstance(e.__cause__, Terminated):
                fail("terminated (SIGTERM)", TERMINATED)
            fail("interrupted", INTERRUPTED)
        sys.exit(code if isinstance(code, int) else OK)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C (every ``finally`` runs), reported as its own exit code."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` inside the block (main thread, default handler only)."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # not the main thread
        previous = None
    if previous is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_SMALLER = {"sample": "a smaller --num", "complete": "a smaller --num", "upscale": "a smaller --num",
            "eval": "a smaller --batch-size", "train": "a smaller train.batch_size, with --set"}


def debugging() -> bool:
    """Whether the root command was given ``--debug``."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("debug"))


def friendly(fn):
    """Run a command body, turning every exception into one line and an exit code (see the module
    docstring); with ``--debug`` exceptions propagate with their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Terminated:
            fail("terminated (SIGTERM)", TERMINATED)
        except KeyboardInterrupt:
            fail("interrupted", INTERRUPTED)
        except Exception as e:
            if debugging():
                raise
            fail(*explain(e))

    return wrapper


def explain(e: Exception) -> tuple[str, int]:
    """The one-line message and exit code for an exception that ended a command."""
    if isinstance(e, ImagegenError):
        return str(e), FAILED if isinstance(e, WriteError) else BAD_INPUT
    if _out_of_memory(e):
        ctx = click.get_current_context(silent=True)
        less = _SMALLER.get(ctx.info_name if ctx else "", "")
        return f"out of memory ({type(e).__name__})" + (f": ask for less ({less})" if less else ""), FAILED
    if isinstance(e, OSError):
        where = f" {e.filename}" if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return f"cannot write{where}: {e.strerror} (the disk is full or a size limit is hit)", FAILED
        return f"cannot continue{where}: {e.strerror or e}", FAILED
    if isinstance(e, RuntimeError) and ("write failed" in str(e) or "inline_container" in str(e)):
        return f"torch.save could not write a file ({str(e).strip()[-80:]}): is the disk full?", FAILED
    return (f"unexpected {type(e).__name__}: {e} -- a bug in imagegen; rerun with `imagegen --debug` for "
            "the traceback and report it", FAILED)


def _out_of_memory(e: Exception) -> bool:
    """Whether ``e`` is an allocation failure (Python's, or torch's on CPU or GPU)."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in ("can't allocate memory",
                                                                     "not enough memory"))
