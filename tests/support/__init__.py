"""What the tests share beyond fixtures: processes, servers and network faults, as plain modules."""
