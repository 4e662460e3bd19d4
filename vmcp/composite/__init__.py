"""What a composite run carries and evaluates: the workflow and activity contracts, and the sandboxed
templates. Pure: workflows import these (the step-graph language itself is configuration:
`vmcp.config.composite`)."""
