"""The storage layer's error."""
from __future__ import annotations


class StorageError(Exception):
    """The database cannot be used as configured; the message is one line naming the setting or the part."""
