"""The optional extras of pyproject.toml (train, eval, serve, dev, ...), and the one clear error a
command gives when it needs a package of one that is not installed: which extra to install, and
which package is missing. It is a `llava.cli_errors.UserError`: a command-line entry point ends on
it with exit code 2, no traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from llava.cli_errors import UserError, exit_user_error


class MissingExtraError(UserError, ModuleNotFoundError):
    """`what` needs a package of the optional extra `extra`, and it is not installed."""

    def __init__(self, what: str, extra: str, package: str):
        super().__init__(
            f"{what} needs the {extra} extra: pip install -e '.[{extra}]' (missing: {package})", name=package
        )
        self.extra = extra


def require_extra(what: str, extra: str, *packages: str) -> None:
    """Raise `MissingExtraError` unless one of `packages` (alternatives, the first preferred) is
    installed."""
    if not any(importlib.util.find_spec(package) is not None for package in packages):
        raise MissingExtraError(what, extra, packages[0])


@contextlib.contextmanager
def extra_imports(what: str, extra: str, as_command: bool) -> Iterator[None]:
    """Around a module's imports of `extra`'s packages: a missing one raises `MissingExtraError`;
    in a module run as a command (`as_command`, i.e. `__name__ == "__main__"`) it ends the command
    with `exit_user_error` instead (its imports run before `run_command` could catch it)."""
    try:
        yield
    except ModuleNotFoundError as err:
        error = MissingExtraError(what, extra, err.name)
        if as_command:
            exit_user_error(error)
        raise error from err
