"""Runner answers -> MMBench upload sheet (xlsx, or TSV without openpyxl). Logic: llava.eval.converters.mmbench_main."""

import logging

from llava.eval.converters import mmbench_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mmbench_main()
