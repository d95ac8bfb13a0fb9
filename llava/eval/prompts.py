"""LLaVA-1.5's prompt suffixes, shared by the benchmark registry and the answer runners.

From https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md and its eval scripts.
"""

SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
MULTIPLE_CHOICE_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
MULTIPLE_CHOICE_SUFFIX_CN = "\n请直接回答选项字母。"
VIZWIZ_SUFFIX = (
    "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT_ANSWER_SUFFIX
)
