"""Strict typed YAML: build a tree of dataclasses from a parsed YAML mapping, naming the dotted key of every error.

One validator for every "dataclass from a YAML mapping" of the project (recipes, paper tables, sweep files). The
dataclass annotations are the schema:

* ``bool`` (``true`` / ``false`` only), ``int`` (not a bool, not a float), ``float`` (an int, a float, or a string
  that parses as one: YAML 1.1, i.e. PyYAML, reads ``1e-3`` as a string), ``str`` (a string, or an int / float
  written without quotes, converted), ``Any`` (taken as is, ``null`` included);
* ``X | None`` (``Optional[X]``; a ``null`` is refused for every other type), ``Literal["a", "b"]``, unions of
  several types (the first that accepts the value wins);
* ``list[X]``, ``tuple[X, ...]`` (a YAML list), ``tuple[X, Y]`` (a list of exactly that length),
  ``dict[K, V]`` / ``Mapping[K, V]`` (a YAML mapping; keys converted to ``K``);
* nested dataclasses (a YAML mapping, built recursively).

A field without a default is a required key. ``dataclasses.field(metadata={KEY: "id"})`` reads a field from a mapping
key other than its name. ``build_dataclass(..., values={...})`` sets fields the caller computes itself (they are not
keys of the mapping). ``resolve_type(cls, field_name, data)`` chooses a field's type per instance (e.g. a section
whose dataclass depends on another key): return a type to use instead of the annotation, or ``None`` to keep it.

Errors are raised as the caller's exception class (``error=``; default :class:`SchemaError`), so that each caller keeps
its own error type, with the messages::

    unknown key {prefix}{key} ({source}); allowed under {section}: a, b, c
    missing key {prefix}{name} ({source})
    {key}: expected an integer, got {value!r} ({source})          # also: true/false, a number, a string, a list,
                                                                   # a mapping, one of ..., N values
    {key}: must not be null ({source})

``section`` is the dotted prefix without its final dot, or ``the top level``. Every raised exception also carries the
attributes ``key`` (the dotted key), ``reason`` (the message without key and source) and ``source``, for callers
that format or collect problems themselves (``build_dataclass(..., problems=[])`` collects instead of raising).

Example::

    @dataclass
    class Train:
        epochs: int
        lr: float = 1e-3

    build_dataclass(Train, {"epochs": 2, "lr": "1e-4"}, source="a.yaml", prefix="train.")   # Train(2, 0.0001)
    build_dataclass(Train, {"epoch": 2}, source="a.yaml", prefix="train.", error=ConfigError)
    # ConfigError: unknown key train.epoch (a.yaml); allowed under train: epochs, lr

Pure Python + PyYAML types (no torch import).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import types
import typing
from typing import Any, Callable, Iterable, Literal, Mapping, TypeVar, Union

from hrnet_core.errors import BadInputError

__all__ = ["KEY", "ResolveType", "SchemaError", "build_dataclass", "check_keys", "coerce", "invalid", "mapping_key",
           "strip_optional"]

T = TypeVar("T")

#: Field metadata key naming the mapping key a field is read from: ``field(metadata={KEY: "id"})``.
KEY = "schema.key"

#: ``resolve_type(cls, field_name, data) -> type | None``: the type of field ``field_name`` of dataclass ``cls`` for
#: the mapping ``data`` being built (``None``: the annotation).
ResolveType = Callable[[type, str, Mapping[str, Any]], Any]

_INVALID: Any = object()  # a value that failed validation while problems are being collected


class SchemaError(BadInputError, ValueError):
    """A mapping does not fit its dataclass schema (the default ``error`` class of this module).

    Attributes (set on every exception this module raises, whatever its class): ``key`` (the dotted key, e.g.
    ``train.epochs``), ``reason`` (what is wrong, without key and source) and ``source`` (the file or origin).
    """


def invalid(key: str, reason: str, *, source: str, error: type[Exception] = SchemaError,
            message: str | None = None) -> Exception:
    """The exception for a bad value at ``key``: ``error(f"{key}: {reason} ({source})")`` (or ``error(message)``),
    with the attributes ``key``, ``reason`` and ``source`` set. Callers use it for their own value checks so that
    every message of a file reads alike; it is returned, not raised."""
    exc = error(message if message is not None else f"{key}: {reason} ({source})")
    exc.key, exc.reason, exc.source = key, reason, source  # type: ignore[attr-defined]
    return exc


def strip_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None`` / ``Optional[X]``, else ``(tp, False)`` (a union of several types plus
    ``None`` gives ``(X | Y, True)``)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            rest = tuple(a for a in args if a is not type(None))
            return (rest[0] if len(rest) == 1 else Union[rest]), True  # type: ignore[return-value]
    return tp, False


def mapping_key(f: dataclasses.Field) -> str:
    """The mapping key field ``f`` is read from: ``f.metadata[KEY]``, else the field name."""
    return f.metadata.get(KEY, f.name)


def check_keys(cls: type, data: Mapping[str, Any], *, source: str, prefix: str = "",
               error: type[Exception] = SchemaError, resolve_type: ResolveType | None = None,
               exclude: Iterable[str] = ()) -> None:
    """Check only the key names of ``data`` (a layer to be merged later) against dataclass ``cls``, recursively.

    Values are not checked, except that nested mappings (and lists of mappings) are descended into where the field's
    type is a dataclass; missing keys are allowed. ``exclude``: fields of ``cls`` the caller sets itself (the
    ``values`` of :func:`build_dataclass`), not allowed as keys.

    Raises:
        error: ``unknown key {prefix}{key} ({source}); allowed under {section}: ...`` for the first unknown key, in
            the order of ``data``.
    """
    exclude = tuple(exclude)
    fields = {k: f for k, f in _fields(cls).items() if f.name not in exclude}
    for key, value in data.items():
        if key not in fields:
            raise _unknown(cls, key, prefix, source, error, exclude)
        tp, _ = strip_optional(_field_type(cls, fields[key], data, resolve_type))
        item_tp = typing.get_args(tp)[0] if typing.get_origin(tp) is list and typing.get_args(tp) else None
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            check_keys(tp, value, source=source, prefix=f"{prefix}{key}.", error=error, resolve_type=resolve_type)
        elif dataclasses.is_dataclass(item_tp) and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    check_keys(item_tp, item, source=source, prefix=f"{prefix}{key}[{i}].", error=error,
                               resolve_type=resolve_type)


def coerce(tp: Any, value: Any, *, key: str, source: str, error: type[Exception] = SchemaError,
           resolve_type: ResolveType | None = None) -> Any:
    """``value`` checked against type ``tp`` and converted (see the module docstring for the accepted types).

    Returns lists for ``list[...]``, tuples for ``tuple[...]``, dicts for ``dict`` / ``Mapping``, dataclass instances
    for dataclasses, ``float`` for ``float`` (also from an int or a numeric string), ``str`` for ``str``.

    Raises:
        error: ``{key}: expected ..., got {value!r} ({source})``, ``{key}: must not be null ({source})``, or any error
            of :func:`build_dataclass` for a nested dataclass (keys named below ``key``).
    """
    return _Context(source, error, resolve_type, None).coerce(tp, value, key)


def build_dataclass(cls: type[T], data: Mapping[str, Any], *, source: str, prefix: str = "",
                    error: type[Exception] = SchemaError, resolve_type: ResolveType | None = None,
                    values: Mapping[str, Any] | None = None, problems: list[Exception] | None = None) -> T:
    """Build dataclass ``cls`` from the mapping ``data``, checking every key and value (recursively).

    Args:
        cls: the dataclass (its type annotations are the schema; fields without a default are required keys).
        data: the parsed YAML mapping.
        source: where ``data`` comes from (a file path, ``"overrides"``, ...), named in every message.
        prefix: dotted key of ``data`` with a trailing dot (``"train."``), prepended to every key in messages.
        error: the exception class to raise (constructed with the message alone).
        resolve_type: optional per-instance field type (see the module docstring).
        values: fields the caller sets itself; they are passed to ``cls`` as given and are not keys of ``data``.
        problems: collect the errors into this list instead of raising the first one. Bad values are then left out
            (a field keeps its default, a list or mapping loses the item); the return value is ``None`` when a
            required field is missing or bad.

    Raises:
        error: ``unknown key ...`` (the first in sorted order), ``missing key ...``, or a value error of
            :func:`coerce`; see the module docstring for the formats.
    """
    ctx = _Context(source, error, resolve_type, problems)
    if not isinstance(data, Mapping):
        out = ctx.fail(prefix[:-1] or "the top level", f"expected a mapping, got {data!r}")
    else:
        out = ctx.build(cls, data, prefix, values or {})
    return None if out is _INVALID else out  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------- internals


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    """Mapping key -> init field of dataclass ``cls``."""
    return {mapping_key(f): f for f in dataclasses.fields(cls) if f.init}


def _field_type(cls: type, f: dataclasses.Field, data: Mapping[str, Any], resolve_type: ResolveType | None) -> Any:
    resolved = resolve_type(cls, f.name, data) if resolve_type is not None else None
    return resolved if resolved is not None else _hints(cls)[f.name]


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


def _unknown(cls: type, key: Any, prefix: str, source: str, error: type[Exception], exclude) -> Exception:
    section = prefix[:-1] or "the top level"
    allowed = ", ".join(k for k, f in _fields(cls).items() if f.name not in exclude)
    return invalid(f"{prefix}{key}", f"unknown key (allowed under {section}: {allowed})", source=source, error=error,
                   message=f"unknown key {prefix}{key} ({source}); allowed under {section}: {allowed}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {', '.join(_fields(tp))}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


class _Context:
    """One validation: where the data comes from, how to fail, and (optionally) where problems are collected."""

    def __init__(self, source: str, error: type[Exception], resolve_type: ResolveType | None,
                 problems: list[Exception] | None):
        self.source, self.error, self.resolve_type, self.problems = source, error, resolve_type, problems

    def fail(self, key: str, reason: str) -> Any:
        """Raise (or collect) the error ``{key}: {reason} ({source})``; returns the invalid marker."""
        return self.report(invalid(key, reason, source=self.source, error=self.error))

    def report(self, exc: Exception) -> Any:
        """Raise ``exc``, or append it to the collected problems and return the invalid marker."""
        if self.problems is None:
            raise exc
        self.problems.append(exc)
        return _INVALID

    def build(self, cls: type, data: Mapping[str, Any], prefix: str, values: Mapping[str, Any]) -> Any:
        fields = {k: f for k, f in _fields(cls).items() if f.name not in values}
        for key in sorted((k for k in data if k not in fields), key=str):
            self.report(_unknown(cls, key, prefix, self.source, self.error, values))
        kwargs = dict(values)
        complete = True
        for key, f in fields.items():
            if key in data:
                value = self.coerce(_field_type(cls, f, data, self.resolve_type), data[key], prefix + key)
                if value is not _INVALID:
                    kwargs[f.name] = value
                    continue
            elif _required(f):
                self.report(invalid(prefix + key, "missing key", source=self.source, error=self.error,
                                    message=f"missing key {prefix}{key} ({self.source})"))
            complete = complete and not _required(f)
        return cls(**kwargs) if complete else _INVALID

    def coerce(self, tp: Any, value: Any, key: str) -> Any:
        tp, optional = strip_optional(tp)
        if tp is Any:
            return value
        if value is None:
            return None if optional else self.fail(key, "must not be null")
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                return self.fail(key, f"expected a mapping, got {value!r}")
            return self.build(tp, value, key + ".", {})
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Literal:
            if any(value == a and type(value) is type(a) for a in args):
                return value
            return self.fail(key, f"expected {_type_name(tp)}, got {value!r}")
        if origin in (list, tuple, collections.abc.Sequence):
            return self._sequence(origin, args, value, key)
        if origin in (dict, collections.abc.Mapping):
            return self._mapping(args, value, key)
        if origin in (Union, types.UnionType):
            return self._union(args, value, key)
        return self._scalar(tp, value, key)

    def _sequence(self, origin: Any, args: tuple, value: Any, key: str) -> Any:
        if not isinstance(value, (list, tuple)):
            return self.fail(key, f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return self.fail(key, f"expected {len(args)} values, got {value!r}")
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        items = [self.coerce(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(item_types, value))]
        if any(v is _INVALID for v in items):
            if origin is tuple and args and args[-1] is not Ellipsis:
                return _INVALID
            items = [v for v in items if v is not _INVALID]  # collecting problems: drop the bad items
        return tuple(items) if origin is tuple else items

    def _mapping(self, args: tuple, value: Any, key: str) -> Any:
        if not isinstance(value, Mapping):
            return self.fail(key, f"expected a mapping, got {value!r}")
        key_tp, value_tp = args or (Any, Any)
        out = {self.coerce(key_tp, k, f"{key}.{k}"): self.coerce(value_tp, v, f"{key}.{k}") for k, v in value.items()}
        return {k: v for k, v in out.items() if k is not _INVALID and v is not _INVALID}  # collecting: drop bad items

    def _union(self, args: tuple, value: Any, key: str) -> Any:
        strict = _Context(self.source, self.error, self.resolve_type, None)
        for tp in args:
            try:
                return strict.coerce(tp, value, key)
            except self.error:
                continue
        return self.fail(key, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")

    def _scalar(self, tp: Any, value: Any, key: str) -> Any:
        if tp is bool:
            if isinstance(value, bool):
                return value
        elif tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
                try:
                    return float(value)
                except ValueError:
                    pass
        elif tp is str:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
        else:
            return self.fail(key, f"unsupported field type {tp}")  # a programming error in the schema
        return self.fail(key, f"expected {_type_name(tp)}, got {value!r}")
