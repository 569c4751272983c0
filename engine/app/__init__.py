"""The application layer: the ``buddy`` CLI and the end-to-end run behind ``buddy run``."""

from buddy.engine.app._cli import cli, main
from buddy.engine.app._harness import RunConfig, RunSummary, run

__all__ = ["RunConfig", "RunSummary", "cli", "main", "run"]
