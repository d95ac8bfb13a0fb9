"""Evaluation: answer generators, benchmark registry, scorers and the report."""
