"""`vmcp dev`: process supervision and the embedded Temporal dev server."""
