"""Ownership of background work: every task is named, kept, cancelled and awaited by its owner."""
from .tasks import TaskOwner

__all__ = ["TaskOwner"]
