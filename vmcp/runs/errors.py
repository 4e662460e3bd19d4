"""What asking about runs can fail with, in a module of its own: the modules that catch these
need not import the Temporal client (`orchestrator`, `temporal_client` raise them), so a façade
loads that client only when it first talks to Temporal."""

from __future__ import annotations


class TemporalUnreachable(Exception):
    """Temporal did not answer; the message names the address and the reason, for an operator."""


class RunNotFound(Exception):
    """No run with that id."""


class NotARun(RunNotFound):
    """The id names no composite run of this vmcp: not a run id at all, or another application's
    workflow (another type, or another task queue). Nothing is sent to such a workflow."""


class RunNotWaiting(Exception):
    """The run is closed, or did not take the decision."""
