"""Argument policies, URL rules and authorization rules: pure judgements over plain data."""
