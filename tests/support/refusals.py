"""What a refused command must look like to a user: exit 2, the named words, no traceback."""

from __future__ import annotations


def assert_refused(result, *words: str) -> None:
    """`result` (a finished subprocess) exited 2 with every one of `words` on stderr and no
    Python traceback."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert word in result.stderr, result.stderr[-3000:]
