"""MCP servers that vmcp ships for its own demos and tests (each one runs on its own, too)."""
