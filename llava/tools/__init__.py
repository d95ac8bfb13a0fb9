"""Utilities: tiny offline checkpoints and tokenizers."""
