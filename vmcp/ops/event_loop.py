"""Which event loop vmcp's processes run on: uvloop when installed.

uvloop roughly halves the event-loop cost of every forwarded call, and `vmcp dev` runs the façade,
the worker and the backend connections on one loop, where a composite run's every step pays it
several times over. `vmcp serve`, `vmcp dev` and the worker all start their loop with these options.
"""

from __future__ import annotations


def event_loop_options() -> dict[str, bool]:
    """anyio's `backend_options` for `anyio.run`: uvloop when it can be imported."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
