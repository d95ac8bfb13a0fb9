"""Run the training entry point under a real fault (for the checkpoint tests).

In-process, from a test (`run_killed`): the run is forked from the test process (no second
import of torch and transformers) and SIGKILLs itself at a chosen point of a checkpoint save:

- `RenameKill(call, when)`: at the `call`-th `os.replace` / `os.rename` of a checkpoint path
  since the run started, `before` or `after` it. A save publishes with 2 such calls (the
  manifest's rename, then `.tmp-checkpoint-N` -> `checkpoint-N`), or 3 when `checkpoint-N`
  already exists (the manifest's, `checkpoint-N` -> `.replaced-checkpoint-N`, then the new one
  into place); see `llava.train.resume.publish_checkpoint`.
- `TimedKill(step, delay)`: `delay` seconds after the save of step `step` creates its temporary
  folder. If the save reaches its first publishing rename before then, it waits there for the
  kill, so the kill always lands inside the save: while its files are written, or before its
  manifest.

From the command line (a fault that needs a process of its own):

python tests/train/fault_run.py file-size-limit BYTES <llava.train.train flags>
    Train with RLIMIT_FSIZE = BYTES: writing a file beyond it fails with EFBIG, as a full disk
    fails a write (SIGXFSZ is ignored, so the write returns the error).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from llava.train.arguments import parse_arguments
from llava.train.train import train

CHECKPOINT_MARK = "checkpoint-"  # in every path a checkpoint save renames


@dataclass(frozen=True)
class RenameKill:
    call: int
    when: str = "before"  # or "after"


@dataclass(frozen=True)
class TimedKill:
    step: int
    delay: float


def _kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _hook(name: str, on_call: Callable[[Callable[[], None]], None], selects: Callable[[str], bool]) -> None:
    """Replace `os.<name>`: a call whose source path `selects` is handed to `on_call` as a thunk."""
    original = getattr(os, name)

    def hooked(src, dst, *args, **kwargs):
        if not selects(os.fspath(src)):
            return original(src, dst, *args, **kwargs)
        return on_call(lambda: original(src, dst, *args, **kwargs))

    setattr(os, name, hooked)


def _install_rename_kill(kill: RenameKill) -> None:
    calls = 0

    def on_call(do_it):
        nonlocal calls
        calls += 1
        if calls == kill.call and kill.when == "before":
            _kill_now()
        result = do_it()
        if calls == kill.call:
            _kill_now()
        return result

    for name in ("replace", "rename"):
        _hook(name, on_call, lambda src: CHECKPOINT_MARK in src)


def _install_timed_kill(kill: TimedKill) -> None:
    armed = threading.Event()
    temp_name = f".tmp-{CHECKPOINT_MARK}{kill.step}"
    original_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        original_mkdir(path, *args, **kwargs)
        if os.path.basename(os.fspath(path)) == temp_name and not armed.is_set():
            armed.set()
            threading.Timer(kill.delay, _kill_now).start()

    def on_call(do_it):
        if armed.is_set():
            threading.Event().wait()  # the timer's SIGKILL ends the process here
        return do_it()

    os.mkdir = mkdir
    for name in ("replace", "rename"):
        _hook(name, on_call, lambda src: CHECKPOINT_MARK in src)


def _killed_child(argv: list[str], kill: RenameKill | TimedKill) -> None:
    if isinstance(kill, RenameKill):
        _install_rename_kill(kill)
    else:
        _install_timed_kill(kill)
    train(*parse_arguments(argv))


def run_killed(argv: list[str], kill: RenameKill | TimedKill, timeout: float = 180) -> int:
    """Run `llava.train.train` with `argv` in a forked process that SIGKILLs itself at `kill`;
    its exit code (`-signal.SIGKILL` when the kill happened, 0 when the run finished first)."""
    process = multiprocessing.get_context("fork").Process(target=_killed_child, args=(argv, kill))
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        raise TimeoutError(f"the run with {kill} did not end within {timeout} s")
    return process.exitcode


def main() -> None:
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode != "file-size-limit":
        raise SystemExit(f"unknown mode {mode!r}: file-size-limit")
    limit, flags = int(argv[0]), argv[1:]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    train(*parse_arguments(flags))


if __name__ == "__main__":
    main()
