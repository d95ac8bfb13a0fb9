"""Entry point for the `deepspeed` launcher, with FlashAttention-2 by default (as LLaVA's
`train_mem.py`); `--attn_implementation` overrides it.

    deepspeed llava/train/train_mem.py --deepspeed scripts/zero2.json ...
"""

from llava.train.train import main

if __name__ == "__main__":
    main(default_attn_implementation="flash_attention_2")
