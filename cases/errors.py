"""What the case domain refuses, each as a one-line message naming what was wrong."""
from __future__ import annotations


class CaseStoreError(Exception):
    """The case store refused a request; the message is one line naming what was wrong."""


class CaseNotFound(CaseStoreError, LookupError):
    """No case has the requested case number."""


class CaseTransitionError(CaseStoreError):
    """A change would move a case between two statuses the transition table does not connect."""

    def __init__(self, case_number: str, current: str, target: str) -> None:
        super().__init__(f"case {case_number} cannot go from {current} to {target}")
        self.case_number = case_number
        self.current = current
        self.target = target
