"""The small JSON files a user may edit by hand (a run's run.json and latest.json, a configuration given with
``--config``, a golden's manifest): read with a size limit and checked against a schema, so that whatever was
edited, the problem is one line naming the file and the field: ``<file>: <field>: <problem>``.

Rules it keeps:
  * a file is read with at most ``limit`` bytes (``JSON_LIMIT`` unless told); a larger one, or a device that
    never ends (/dev/zero), is refused after ``limit + 1`` bytes, never read in full;
  * a schema is a ``Check``: a function ``(value, field)`` that raises ``Invalid(field, problem)``; ``check``
    turns the first problem into the caller's error class; nothing is converted on the way (the string "12"
    is not a list of integers, ``true`` is not the integer 1);
  * integers are ints and not bools, numbers are finite ints or floats, an object refuses keys it does not know.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from typing import Any, Callable, Mapping

from ddpm_core.errors import UserError

JSON_LIMIT = 1 << 20
"""The largest JSON file read by default (1 MiB): a run's records or a configuration are a few kilobytes."""

Check = Callable[[Any, str], None]
"""``check(value, field)``: returns if ``value`` fits, else raises ``Invalid(field, problem)``."""


class Invalid(Exception):
    """A value that does not fit its schema: ``field`` (``checkpoints[1].sha256``; "" for the whole file)
    and ``problem`` (what is wrong, with what was found)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field, self.problem = field, problem


def shown(value: Any) -> str:
    """What was found, as a JSON reader sees it: ``a string ("12")``, ``a list``, ``true``, ``-3``."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"a string ({json.dumps(value[:40])}{'...' if len(value) > 40 else ''})"
    return {dict: "an object", list: "a list", tuple: "a list"}.get(type(value), type(value).__name__)


def _sub(field: str, key: str | int) -> str:
    return f"{field}[{key}]" if isinstance(key, int) else (f"{field}.{key}" if field else key)


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    """An int (not a bool) within ``[minimum, maximum]``."""
    def check(value: Any, field: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(field, f"expected an integer, got {shown(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = (f">= {minimum}" if maximum is None else f"<= {maximum}" if minimum is None
                      else f"in [{minimum}, {maximum}]")
            raise Invalid(field, f"expected an integer {bounds}, got {value}")
    return check


def number(minimum: float | None = None) -> Check:
    """A finite int or float (not a bool), at least ``minimum``."""
    def check(value: Any, field: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise Invalid(field, f"expected a finite number, got {shown(value)}")
        if minimum is not None and value < minimum:
            raise Invalid(field, f"expected a number >= {minimum}, got {value}")
    return check


def boolean() -> Check:
    """``true`` or ``false``."""
    def check(value: Any, field: str) -> None:
        if not isinstance(value, bool):
            raise Invalid(field, f"expected true or false, got {shown(value)}")
    return check


def string(choices: tuple[str, ...] | None = None, pattern: str | None = None) -> Check:
    """A string, one of ``choices`` or matching ``pattern`` in full when given."""
    def check(value: Any, field: str) -> None:
        if not isinstance(value, str):
            raise Invalid(field, f"expected a string, got {shown(value)}")
        if choices is not None and value not in choices:
            raise Invalid(field, f"expected one of {', '.join(choices)}, got {json.dumps(value)[:60]}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise Invalid(field, f"{json.dumps(value)[:80]} is not of the form {pattern}")
    return check


def optional(inner: Check) -> Check:
    """``null``, or what ``inner`` accepts."""
    def check(value: Any, field: str) -> None:
        if value is not None:
            inner(value, field)
    return check


def list_of(item: Check, min_len: int = 0) -> Check:
    """A list (at least ``min_len`` long) whose every item ``item`` accepts."""
    def check(value: Any, field: str) -> None:
        if not isinstance(value, list):
            raise Invalid(field, f"expected a list, got {shown(value)}")
        if len(value) < min_len:
            raise Invalid(field, f"expected at least {min_len} item(s), got {len(value)}")
        for i, v in enumerate(value):
            item(v, _sub(field, i))
    return check


def dict_of(value: Check, key_pattern: str | None = None) -> Check:
    """A JSON object of any keys (matching ``key_pattern`` in full when given) whose every value ``value`` accepts."""
    def check(v: Any, field: str) -> None:
        if not isinstance(v, dict):
            raise Invalid(field, f"expected a JSON object, got {shown(v)}")
        for key, item in v.items():
            if key_pattern is not None and not re.fullmatch(key_pattern, key):
                raise Invalid(_sub(field, key), f"not a key of the form {key_pattern}")
            value(item, _sub(field, key))
    return check


def obj(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    """A JSON object with every key of ``required``, any of ``optional``, and no other key."""
    optional = dict(optional or {})

    def check(value: Any, field: str) -> None:
        if not isinstance(value, dict):
            raise Invalid(field, f"expected a JSON object, got {shown(value)}")
        unknown = sorted(str(k) for k in value if k not in required and k not in optional)
        if unknown:
            known = sorted([*required, *optional])
            raise Invalid(_sub(field, unknown[0]), "unknown field" + (f" (known: {', '.join(known)})"
                                                                       if len(known) <= 8 else ""))
        for key, inner in required.items():
            if key not in value:
                raise Invalid(_sub(field, key), "missing")
        for key, v in value.items():
            (required.get(key) or optional[key])(v, _sub(field, key))
    return check


def for_dataclass(cls: type, checks: Mapping[str, Check] | None = None) -> Check:
    """The object schema of a dataclass's fields: required are those without a default; each field's check is
    in ``checks`` or follows from its type (``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]`` and
    ``X | None`` of these)."""
    checks = dict(checks or {})
    hints = typing.get_type_hints(cls)
    unknown = set(checks) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"checks for fields {cls.__name__} does not have: {sorted(unknown)}")

    def from_type(t: Any) -> Check:
        args = typing.get_args(t)
        if typing.get_origin(t) in (typing.Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            return optional(from_type(rest[0]))
        if typing.get_origin(t) is tuple:
            return list_of(from_type(args[0]))
        simple = {int: integer, float: number, bool: boolean, str: string}
        if t not in simple:
            raise TypeError(f"{cls.__name__}: no check for the type {t}; pass one in checks")
        return simple[t]()

    required, optional_ = {}, {}
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (optional_ if has_default else required)[f.name] = checks.get(f.name) or from_type(hints[f.name])
    return obj(required, optional_)


def check(value: Any, schema: Check, source: str, error: type[Exception] = UserError) -> Any:
    """``value`` if ``schema`` accepts it, else ``error("<source>: <field>: <problem>")``."""
    try:
        schema(value, "")
    except Invalid as e:
        raise error(f"{source}: {e}") from None
    return value


def read_limited(path: str | os.PathLike, limit: int = JSON_LIMIT) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them; ``OSError`` if it cannot be read and ``ValueError``
    (naming the limit) if it holds more. A device or a pipe is read the same way, never beyond ``limit + 1``."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes: not a file of settings")
    return data


def load_json(path: str | os.PathLike, error: type[Exception] = UserError, limit: int = JSON_LIMIT,
              schema: Check | None = None) -> Any:
    """The JSON value in ``path`` (read with ``read_limited``), checked against ``schema`` when given; any
    problem is one ``error`` that names the file."""
    try:
        value = json.loads(read_limited(path, limit).decode("utf-8"))
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    except (ValueError, RecursionError) as e:  # too large, not UTF-8, not JSON, nested too deeply
        raise error(f"{path}: {json_problem(e)}") from None
    return check(value, schema, str(path), error) if schema is not None else value


def json_problem(e: ValueError | RecursionError) -> str:
    """Why text could not be read as JSON, in one phrase."""
    if isinstance(e, RecursionError):
        return "not valid JSON here (nested too deeply)"
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 text (byte {e.start})"
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    return str(e)
