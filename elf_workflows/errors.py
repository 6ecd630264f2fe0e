"""Exceptions whose message is the one line the command line prints after ``error:``."""

from __future__ import annotations


class ElfWorkflowsError(Exception):
    """Base class: a user-facing failure with a one-line message."""


class InputError(ElfWorkflowsError, ValueError):
    """Bad input: unreadable file, no lattice, partial occupancy, overlapping atoms, unknown element..."""


class GridError(InputError):
    """A grid that is non-positive, incompatible or too large for memory."""


class EngineError(ElfWorkflowsError, RuntimeError):
    """A reference (DFT) or surrogate engine failed: missing PAW dataset, unconverged SCF, time-out."""


class StoreError(ElfWorkflowsError, RuntimeError):
    """The store is unreachable or refused a write."""
