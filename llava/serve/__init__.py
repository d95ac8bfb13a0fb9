"""Serving: interactive command-line chat."""
