"""Run the training entry point under a real fault (for the checkpoint tests).

python tests/train/fault_run.py kill-during-save STEP DELAY <llava.train.train flags>
    SIGKILL the process DELAY seconds after step STEP ends, i.e. while (or just after) its
    checkpoint is written.
python tests/train/fault_run.py file-size-limit BYTES <llava.train.train flags>
    Train with RLIMIT_FSIZE = BYTES: writing a file beyond it fails with EFBIG, as a full disk
    fails a write (SIGXFSZ is ignored, so the write returns the error).
"""

import os
import resource
import signal
import sys
import threading

from transformers import TrainerCallback

from llava.train.arguments import parse_arguments
from llava.train.train import train


class KillDuringSave(TrainerCallback):
    """Start a timer at the end of step `step` (just before its save) that SIGKILLs the process."""

    def __init__(self, step: int, delay: float):
        self.step = step
        self.delay = delay

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            threading.Timer(self.delay, os.kill, (os.getpid(), signal.SIGKILL)).start()


def main() -> None:
    mode, argv = sys.argv[1], sys.argv[2:]
    if mode == "kill-during-save":
        step, delay, flags = int(argv[0]), float(argv[1]), argv[2:]
        train(*parse_arguments(flags), callbacks=[KillDuringSave(step, delay)])
    elif mode == "file-size-limit":
        limit, flags = int(argv[0]), argv[1:]
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        train(*parse_arguments(flags))
    else:
        raise SystemExit(f"unknown mode {mode!r}: kill-during-save or file-size-limit")


if __name__ == "__main__":
    main()
