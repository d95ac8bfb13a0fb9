"""Test/CI-only launcher: run `llava.train.train` under DeepSpeed on a CPU-only machine.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m llava.train.cpu_deepspeed_launch \\
        <llava.train.train flags> --deepspeed scripts/zero3.json --accelerator_config '{"use_configured_state": true}'

Without CUDA, accelerate's state has no distributed backend, so the Trainer sizes batches for one
process while DeepSpeed (which starts gloo itself) sees every rank. This shim selects DeepSpeed's
CPU accelerator, creates accelerate's state with the gloo backend first, then runs the training
module unchanged. Real (GPU) runs use the `deepspeed` launcher with `llava/train/train_mem.py`.
"""

import os
import runpy
import sys


def main() -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState

    state = PartialState(backend="gloo")
    sys.argv = ["llava.train.train", *sys.argv[1:]]
    runpy.run_module("llava.train.train", run_name="__main__", alter_sys=True)
    # Leave together and tear the process group down before the interpreter exits: a rank that
    # exits with the communication threads still alive can abort ("terminate called without an
    # active exception") after the run has finished and saved.
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main()
