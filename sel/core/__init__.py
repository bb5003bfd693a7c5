"""Errors, paths and atomic writes, the stage entry."""
