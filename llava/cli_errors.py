"""Known user errors, and how a command-line entry point ends on one: its message as one line on
stderr, exit code 2, no traceback. With `LLAVA_DEBUG=1` in the environment the error is raised
as any other, with its traceback.

A known user error is an instance of `UserError` (a used `--output_dir`, a resume whose flags
differ from its checkpoint's, a missing image, a LoRA run without `--model-base`, an export
refusal, a missing optional extra, ...): its message names the culprit and the way out. Every
other exception keeps its traceback. The entry points end through `run_command` in their
`if __name__ == "__main__"` block, so that `main()` called from Python raises as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

DEBUG_ENV = "LLAVA_DEBUG"


class UserError(Exception):
    """A mistake in what a command was given (a flag, a folder, a file); the message says which
    and what to do instead."""


def exit_user_error(error: UserError) -> NoReturn:
    """End a command on `error`: its message as one line on stderr, exit code 2 (with
    `LLAVA_DEBUG=1`: raise it, traceback and all)."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise error
    sys.stderr.write(f"{error}\n")
    raise SystemExit(2)


def run_command(main: Callable[[], object]) -> None:
    """Run a command's `main()`, ending on a `UserError` with `exit_user_error`."""
    try:
        main()
    except UserError as err:
        exit_user_error(err)
