"""Runner answers -> GQA testdev_balanced_predictions.json. Logic: llava.eval.converters.gqa_main."""

import logging

from llava.eval.converters import gqa_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    gqa_main()
