"""A rank that stops at a known point of a CPU DeepSpeed run and waits there to be killed (node 1
of the multi-node kill test): it trains like `llava.train.cpu_deepspeed_launch`, and once the
checkpoint of step N is published (every rank passes the barrier after the main process renames
it into place), writes MARKER and blocks until the test kills its node.

    torchrun ... -m tests.train.pause_after_save N MARKER <llava.train.train flags>
"""

import sys
import threading
from pathlib import Path

from transformers import TrainerCallback

from llava.train.arguments import parse_arguments
from llava.train.cpu_deepspeed_launch import cpu_deepspeed_rank
from llava.train.train import train


class PauseAfterSave(TrainerCallback):
    def __init__(self, step: int, marker: Path):
        self.step = step
        self.marker = marker

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.marker.write_text(str(state.global_step))
            threading.Event().wait()  # the test's SIGKILL of the node ends the process here


if __name__ == "__main__":
    step, marker, flags = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    with cpu_deepspeed_rank():
        train(*parse_arguments(flags), callbacks=[PauseAfterSave(step, marker)])
