"""The MCP clients connected to vmcp: their sessions and log levels, what they follow, and asking
them something in the middle of a call."""
