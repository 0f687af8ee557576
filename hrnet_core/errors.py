"""The project's error bases: what a retry cannot fix, and what the user must fix (one line, exit status 2).

Every layer raises a subclass of :class:`BadInputError` for bad input (a recipe or override, prepared data, an image
or annotation file, a checkpoint, a Ray cluster that cannot run the request, a sweep file); the ``hrnet`` command
prints the first line of its message and exits with :attr:`BadInputError.exit_status`. Ray Train's failure policy
retries a lost worker but never a :class:`FinalError` (a deterministic rerun fails the same way): bad input, and
bad numbers such as a non-finite loss (:class:`hrnet_core.engine.loop.NonFiniteLossError`).

Imports nothing: every module can reach it without an import circle.
"""

from __future__ import annotations

__all__ = ["FinalError", "BadInputError", "WorkerInputFailure", "cause_chain", "final_error", "root_cause"]


class FinalError(Exception):
    """A failure that a retry reproduces (bad input or bad numbers): never retried by the training's failure
    policy."""


class BadInputError(FinalError):
    """Bad input the user can fix: the message names the file, key or resource and the fix.

    Attributes:
        exit_status: the ``hrnet`` command's exit status for it (2; 1 where the data, not the command, is at fault).
    """

    exit_status: int = 2


class WorkerInputFailure(BadInputError):
    """A :class:`FinalError` raised inside a Ray Train worker (or a Ray Data task it ran), re-raised by the worker
    as plain data that survives Ray's serialisation (which drops ``__cause__``): ``kind`` is the original class
    name, ``str()`` its one-line message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)

    @property
    def kind(self) -> str:
        """The original exception's class name (``ImageReadError``, ``NonFiniteLossError`` ...)."""
        return str(self.args[0])

    def __str__(self) -> str:
        return str(self.args[1])

    @classmethod
    def of(cls, exc: BaseException) -> "WorkerInputFailure":
        """The failure of ``exc`` (a :class:`FinalError`): its class name and its message's last line."""
        text = str(exc).strip().splitlines()
        return cls(getattr(exc, "kind", type(exc).__name__), text[-1] if text else "")


def cause_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception object behind it, outermost first: ``__cause__`` / ``__context__``, a Ray task
    error's ``cause``, Ray Train's ``worker_failures`` (dict of rank -> exception) and ``controller_failure``."""
    out: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(failures.values())
        for attr in ("controller_failure", "cause"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return out


def final_error(exc: BaseException) -> BaseException | None:
    """The innermost :class:`FinalError` object in ``exc``'s :func:`cause_chain`, else None (innermost: Ray's
    ``RayTaskError(ImageReadError)`` is an instance of the cause's class too, with Ray's text in its message; its
    ``cause`` is the original)."""
    return next((e for e in reversed(cause_chain(exc)) if isinstance(e, FinalError)), None)


def root_cause(exc: BaseException) -> BaseException:
    """The exception to show for a failure: its :func:`final_error` if there is one, else the innermost cause."""
    return final_error(exc) or cause_chain(exc)[-1]
