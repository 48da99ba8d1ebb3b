"""`daxiao compare`: train or load several models under one recipe, test, profile and rank them."""

from .runner import compare, compare_table, parse_models

__all__ = ["compare", "compare_table", "parse_models"]
