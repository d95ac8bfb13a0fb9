"""Runner answers -> VizWiz EvalAI submission JSON. Logic: llava.eval.converters.vizwiz_main."""

import logging

from llava.eval.converters import vizwiz_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    vizwiz_main()
