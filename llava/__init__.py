"""Inverse-LLaVA: vision features injected into attention instead of projected into text space."""

__version__ = "0.1.0"
