"""Temporal workflow definitions: deterministic code only (see tests/unit/test_layering.py)."""

from workflows.composite import CompositeToolWorkflow

WORKFLOWS = [CompositeToolWorkflow]
"""Every workflow the worker registers."""
