"""Recipes -> phases, the runner that records epochs, the training stage."""
