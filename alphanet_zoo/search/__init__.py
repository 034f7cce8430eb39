"""Evolutionary search for the best subnet at a FLOPs budget."""
