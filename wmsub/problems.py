"""A problem with a setup, as the user reads it: what it is about, what is wrong, the fix.

Used wherever wmsub refuses a setup before the queue (login/preflight.py) and by the
checks that also run on the compute node (the checkpoint layout, the judge setup). No
torch, no third-party imports: the compute-node probe imports this in any interpreter.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or, in a list of warnings, worth knowing) about a setup."""
    key: str  # the config key or the file it is about, e.g. "slurm.python" or a path
    what: str  # what is wrong, with the value or file that shows it
    fix: str  # what to do about it

    def __str__(self) -> str:
        return f"{self.key}: {self.what} — fix: {self.fix}"

    def to_json(self) -> dict:
        return asdict(self)


class ProblemsError(ValueError):
    """Several problems at once; the message lists each with its fix."""

    def __init__(self, problems: list[Problem], heading: str = "the setup has problems"):
        self.problems = list(problems)
        super().__init__(heading + ":\n  " + "\n  ".join(str(p) for p in self.problems))
