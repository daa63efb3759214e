"""Helpers shared by the test modules (tests/ is on pytest's import path: `from support.X
import ...`). Fixtures stay in conftest.py; nothing here is collected as a test."""
