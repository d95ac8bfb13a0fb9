"""Run the training entry point and SIGKILL the process right after the checkpoint of step N is
written (a hard crash at a known point, for the resume test).

    python tests/train/kill_after_save.py N <llava.train.train flags>
"""

import os
import signal
import sys

from transformers import TrainerCallback

from llava.train.arguments import parse_arguments
from llava.train.train import train


class KillAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    train(*parse_arguments(sys.argv[2:]), callbacks=[KillAfterSave(int(sys.argv[1]))])
