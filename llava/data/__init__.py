"""Training data: LLaVA-format datasets, collator and validator."""
