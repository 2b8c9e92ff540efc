"""Backends: one file per backend, each registered by name in :mod:`edged.backends.base`."""
