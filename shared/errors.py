"""The one error for input a person or an organiser must fix, shared by every service's rules and pages."""

from __future__ import annotations


class InvalidInput(ValueError):
    """Input that cannot be accepted; `errors` maps each field to what a person should fix."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
