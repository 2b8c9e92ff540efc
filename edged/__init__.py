"""edged: an on-device agent runtime for edge boards."""

__version__ = "0.1.0"
