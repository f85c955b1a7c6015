"""Errors of the edge package that callers catch without loading a Redis client."""

from __future__ import annotations


class ControlPlaneError(RuntimeError):
    """Redis could not be reached or refused a command: shared state is unavailable right now."""
