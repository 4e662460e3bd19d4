"""Aggregation: conflicts, filters, overrides, tool reshaping, and the routing table. Pure."""
