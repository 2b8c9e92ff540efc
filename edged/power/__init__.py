"""Power sources: one file per source, each registered by name in :mod:`edged.power.base`."""
