"""One kind of error for mistakes a user can fix, shown as a message and never as a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake in the user's input (file, option, dataset): the message names it and the fix."""


def exit_with_message(error: UserError, program: str = "nnunet-transfer") -> "SystemExit":
    """The SystemExit that prints `error` to stderr and ends the process with status 2."""
    print(f"{program}: error: {error}", file=sys.stderr, flush=True)
    return SystemExit(2)


def user_errors_exit(func: Callable[..., T]) -> Callable[..., T]:
    """Decorate a hook that nnU-Net calls: a UserError inside it ends the process with the message.

    Inside `nnUNetv2_train` there is no CLI of ours to catch the error, so the hooks themselves
    turn it into a clean exit.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as error:
            raise exit_with_message(error) from None

    return wrapper
