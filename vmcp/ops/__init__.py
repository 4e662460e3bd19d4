"""Audit trail, metrics, tracing and logs."""
