"""Packaging: what `pip install .` gives an operator, with no source tree around."""
