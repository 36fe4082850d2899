"""Losses that methods plug into the training loop."""
