"""An MCP server for OCI image registries, with a read-only registry that serves an OCI image layout.

`refs` parses image references, `client` speaks the OCI distribution API (`auth` answers its
challenges, `errors` names what fails), `local_registry` serves a layout directory as that API (over
HTTP or in-process), `images` shapes the tools' typed results, and `server` exposes it all over MCP.
"""
