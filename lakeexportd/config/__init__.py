"""Typed, closed configuration models, loading and validation."""
