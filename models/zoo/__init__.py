"""Bundled models (``*.bnn`` files with a card each)."""
