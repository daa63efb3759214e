"""Datasets: synthetic source / target pairs for tests and the demo."""
