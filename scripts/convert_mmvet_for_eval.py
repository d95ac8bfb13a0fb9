"""Runner answers -> MM-Vet grader JSON {"v1_<qid>": text}. Logic: llava.eval.converters.mmvet_main."""

import logging

from llava.eval.converters import mmvet_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mmvet_main()
