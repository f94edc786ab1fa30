"""The errors a user is shown as one line, the exit statuses every command of the project returns, and
the functions that put an exception on one line.

Rules it keeps:
  * an expected problem (a bad option, file, folder or data set; weights that do not fit; a missing
    framework or device) is one of the classes below, and a command prints it as ``error: <message>`` with
    no traceback; anything else is a bug and keeps its traceback;
  * each exit status has one name, here; argparse's own status for a bad option is ``EXIT_USER_ERROR``;
  * this module imports nothing of the project, so every floor (core, twins, harness) can use it.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_MISMATCH = 1
"""parity: a numeric or settings mismatch between the twins."""
EXIT_USER_ERROR = 2
"""A problem with the user's input: an option, a file, a folder, weights that do not map (what the parity
harness calls a structural problem), a request whose memory cannot fit in what the machine has available
(``ddpm_core.runtime.memory``), a training that diverged, weights whose samples are NaN or inf; the twins' commands
and ``parity.convert`` also use it for a framework that is not installed."""
EXIT_ENVIRONMENT = 3
"""parity.check: the environment refuses a fair comparison (a requested device is missing, or a framework it
needs is not installed)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C, as a shell reports a process ended by SIGINT."""


class UserError(Exception):
    """A problem with the user's input (a file, a folder, an option); printed as one line, exit 2."""


class DataError(UserError):
    """Training data that cannot be used; the message names the file or folder."""


class RunError(UserError):
    """A run folder that cannot be started or resumed."""


class Diverged(RunError):
    """A non-finite loss or non-finite weights: the run stops at once."""


class OutputError(UserError):
    """An output that cannot be written: a full disk, a read-only or forbidden destination, an output that
    would replace an input; the message names the path (``ddpm_core.runtime.atomic``, ``ddpm_core.runtime.paths``)."""


class WeightsError(UserError, ValueError):
    """Weights that do not fit a model, or a file that cannot be read or written: ``problems`` holds
    one message per offending key; ``hint`` (optional) says what to try."""

    def __init__(self, problems: list[str], context: str = "weights do not match the model", hint: str = ""):
        self.problems, self.context, self.hint = list(problems), context, hint
        lines = self.problems
        text = f"{context}: {lines[0]}" if len(lines) == 1 else f"{context}:\n  " + "\n  ".join(lines)
        super().__init__(text + (f"\n  hint: {hint}" if hint else ""))


class MissingFramework(ImportError):
    """A framework this code needs is not installed; the message says which extra to install
    (``ddpm_core.runtime.frameworks``)."""


class EnvironmentRefused(RuntimeError):
    """The environment cannot give a fair comparison (a requested device is missing): exit 3."""


def one_line(e: BaseException) -> str:
    """``e`` as the one line after ``error:``: a ``WeightsError``'s context and first problem (and how many
    more), a ``KeyError``'s key, else the first line of the message, else the type's name."""
    if isinstance(e, WeightsError) and e.problems:  # its str holds every problem, one per line
        more = f" (and {len(e.problems) - 1} more)" if len(e.problems) > 1 else ""
        return f"{e.context}: {e.problems[0]}{more}"
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return text.splitlines()[0] if text else type(e).__name__


def type_and_first_sentence(e: BaseException) -> str:
    """``"OSError: <first sentence>"``: a foreign exception as the cause inside one of our messages."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    first = lines[0].split(". ")[0][:200] if lines else "no message"
    return f"{type(e).__name__}: {first}"
