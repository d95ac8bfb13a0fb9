"""Runner answers -> VQAv2 EvalAI submission JSON (every test2015 question). Logic: llava.eval.converters.vqav2_main."""

import logging

from llava.eval.converters import vqav2_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    vqav2_main()
