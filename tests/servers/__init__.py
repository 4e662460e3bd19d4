"""MCP servers written with the SDK for the tests: real servers, with faults on request."""
