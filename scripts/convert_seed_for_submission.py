"""Runner answers -> SEED-Bench scores and upload jsonl. Logic: llava.eval.converters.seed_main."""

import logging

from llava.eval.converters import seed_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    seed_main()
