"""Composite runs: the only module that talks to the Temporal client, the run tools, questions to callers."""
