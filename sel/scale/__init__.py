"""Sweeps on Ray, training stages side by side."""
