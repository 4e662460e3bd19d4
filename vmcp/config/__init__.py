"""The configuration file: strict models, YAML loading, cross-reference checks, durations. Pure."""
