"""Training: arguments, recipe, trainer and the entry point."""
