"""The study runner: one file describes a transfer-learning study, one command runs it."""
