"""Declarative mappings: typed specs for the files in ``mappings/`` and their loader. Pure."""
