"""Typed, closed configuration models, YAML loading and validation with line numbers.

May import: ``errors`` only. Imported by everything above it.
"""
