"""User errors: mistakes in what a user gave (a setting, a file, a checkpoint), reported as one line.

Every command catches :class:`UserError` at its entry point (:func:`exit_on_user_error`) and exits with status 2,
the conventional code for bad usage, without a traceback: the message already names the file or setting and what
to do. ``--debug`` (where a command has it) or ``HYDRA_FULL_ERROR=1`` re-raises it for a bug report. Anything
else is a bug in ssdn and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["USER_ERROR_EXIT", "UserError", "exit_on_user_error", "traceback_wanted"]

USER_ERROR_EXIT = 2
"""Exit status of a command stopped by a user error (argparse uses the same for bad arguments)."""


class UserError(Exception):
    """An error the user can fix; the message names the file or setting and what to do."""


def traceback_wanted(debug: bool = False) -> bool:
    """Whether a user error should show its traceback: ``--debug`` or Hydra's own switch for full errors."""
    return debug or os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextmanager
def exit_on_user_error(prog: str, debug: bool = False) -> Iterator[None]:
    """Turn a :class:`UserError` raised inside into ``prog: message`` on stderr and exit status 2."""
    try:
        yield
    except UserError as exc:
        if traceback_wanted(debug):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None
