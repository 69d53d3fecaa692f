"""Baseline pruning criteria, one module per family, registered into ``oba.criteria`` (which imports each on first use)."""
