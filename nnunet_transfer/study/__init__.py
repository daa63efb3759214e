"""Studies: one file describes a transfer-learning study; one command runs it and writes the report."""
