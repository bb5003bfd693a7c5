"""Typed, validated params; names; named protocols."""
