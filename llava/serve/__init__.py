"""Serving: the interactive CLI, the OpenAI-compatible server (`api`) with its web demo page, and
the lmms-eval model (`lmms_eval_model`)."""
