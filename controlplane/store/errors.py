"""The store's one door for database failures: pymongo's errors become the domain's.

Every public method of a class that derives from :class:`TranslatesErrors` (the task store,
its asynchronous view, the result writer) raises :class:`DatabaseUnavailable` when the
database cannot be reached and :class:`DatabaseError` for any other failure, both
:class:`~controlplane.core.errors.StoreError`.  Code above the store catches those and never
imports pymongo.  A duplicate key is a result, not a failure, and passes through unchanged.

Each translated error also derives from the pymongo class it replaces, so code that predates
the translation (or a test that asserts the driver's error) still recognises it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, PyMongoError

from controlplane.core.errors import ServiceUnavailable, StoreError

F = TypeVar("F", bound=Callable[..., Any])


class DatabaseUnavailable(ServiceUnavailable, StoreError, ConnectionFailure):
    """The database cannot be reached (503 to a client; the write may or may not have happened)."""

    def __init__(self, cause: PyMongoError) -> None:
        ServiceUnavailable.__init__(self, "database", type(cause).__name__)
        self._message = str(cause)
        self._error_labels = set()


class DatabaseError(StoreError, PyMongoError):
    """The database refused or failed an operation for another reason than being unreachable."""

    def __init__(self, cause: PyMongoError) -> None:
        text = _summary(cause)
        StoreError.__init__(self, f"{type(cause).__name__}: {text}")
        self._message = text
        self._error_labels = set()


def _summary(cause: PyMongoError) -> str:
    """The driver error as text, without the documents a bulk write error carries (task data)."""
    if isinstance(cause, BulkWriteError):
        errors = cause.details.get("writeErrors") or []
        codes = sorted({str(e.get("code")) for e in errors})
        return f"{len(errors)} write error(s), codes {', '.join(codes) or 'none'}"
    return str(cause)


def translated(exc: PyMongoError) -> BaseException:
    """The domain's error for a driver error (itself when it is one already, or a duplicate key)."""
    if isinstance(exc, StoreError | DuplicateKeyError):
        return exc
    if isinstance(exc, ConnectionFailure):
        return DatabaseUnavailable(exc)
    return DatabaseError(exc)


def translating(fn: F) -> F:
    """``fn`` (sync or async) with driver errors raised as the domain's."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except PyMongoError as exc:
                error = translated(exc)
                if error is exc:
                    raise
                raise error from exc

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PyMongoError as exc:
            error = translated(exc)
            if error is exc:
                raise
            raise error from exc

    return wrapper  # type: ignore[return-value]


class TranslatesErrors:
    """Base of the store's classes: their public methods raise the domain's errors (see the module).

    Subclasses are covered too, so a method a subclass overrides is translated like the original.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value):
                setattr(cls, name, translating(value))
