"""Utilities (FLOP counting, ...)."""
