"""Test/CI-only launcher: run `llava.train.train` under DeepSpeed on a CPU-only machine.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m llava.train.cpu_deepspeed_launch \\
        <llava.train.train flags> --deepspeed scripts/zero3.json --accelerator_config '{"use_configured_state": true}'

Without CUDA, accelerate's state has no distributed backend, so the Trainer sizes batches for one
process while DeepSpeed (which starts gloo itself) sees every rank. This shim selects DeepSpeed's
CPU accelerator, creates accelerate's state with the gloo backend first, then runs the training
module unchanged. Real (GPU) runs use the `deepspeed` launcher with `llava/train/train_mem.py`.
"""

import contextlib
import os
import runpy
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def cpu_deepspeed_rank() -> Iterator[None]:
    """This process as one rank of a CPU DeepSpeed run: DeepSpeed's CPU accelerator and
    accelerate's state on gloo, for the body to train in (also a test's own training call, with
    its callbacks)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState

    state = PartialState(backend="gloo")
    yield
    # Leave together and tear the process group down before the interpreter exits: a rank that
    # exits with the communication threads still alive can abort ("terminate called without an
    # active exception") after the run has finished and saved.
    state.wait_for_everyone()
    state.destroy_process_group()


def main() -> None:
    sys.argv = ["llava.train.train", *sys.argv[1:]]
    with cpu_deepspeed_rank():
        runpy.run_module("llava.train.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
