"""Typed, validated JSON for stdlib dataclasses: the wire and file formats without pydantic.

Why: the edge agent must cost almost nothing beside its runtime, and pydantic with the
validators it compiled for our models took ~10 MiB of the agent's resident memory. The messages,
the bundle manifest, the hardware profile and the agent's state file are plain dataclasses
that subclass :class:`Record`; this module decodes JSON-like data into them with the checks
the wire needs, and encodes them back. Standard library only.

A record declares its fields with ordinary type hints; value rules and documentation ride
in the field's metadata (see :func:`spec`)::

    @dataclass(frozen=True, kw_only=True)
    class Budgets(Record):
        extra_fields: ClassVar[Extra] = "forbid"

        max_model_bytes: int | None = field(default=None, metadata=spec(ge=1))

    decode(Budgets, {"max_model_bytes": 0})
    # DecodeError: field max_model_bytes: Input should be greater than or equal to 1

Supported field types: ``int``, ``float`` (an int is accepted), ``str``, ``bool``, ``None``,
``X | Y``, ``Literal[...]``, enums, ``tuple[X, ...]`` and fixed ``tuple[X, Y]`` (a list is
accepted), ``dict[str, X]``, ``Any`` (kept as is), ``datetime`` (ISO 8601) and nested records.
Numbers are not parsed from strings, nor strings from numbers. Unknown keys are ignored, or
refused when the class sets ``extra_fields = "forbid"``.

Decoding collects every problem and raises one :class:`DecodeError` naming each field path
(``hardware.cores``, ``precisions[1]``). Value rules are also checked when a record is built
in code (``Record.__post_init__``); types are not, since mypy checks those. Per-class plans
are built once and cached, so decoding a small message costs a few microseconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

Extra = Literal["ignore", "forbid"]
Location = tuple[str | int, ...]
Decoder = Callable[[Any], Any]
Encoder = Callable[[Any, bool], Any]

SPEC_KEY = "edgefleet.codec"

R = TypeVar("R", bound="Record")


class DecodeError(ValueError):
    """Data that does not fit a record. ``problems`` holds every (field path, reason)."""

    def __init__(self, problems: Sequence[tuple[Location, str]]) -> None:
        self.problems: tuple[tuple[Location, str], ...] = tuple(problems)
        super().__init__(
            "; ".join(
                f"field {field_path(where)}: {why}" if where else why
                for where, why in self.problems
            )
        )

    def under(self, part: str | int) -> DecodeError:
        """The same problems, seen from the record or container that holds ``part``."""
        return DecodeError([((part, *where), why) for where, why in self.problems])


def field_path(where: Location) -> str:
    """``("hardware", "cores")`` -> ``hardware.cores``, ``("precisions", 1)`` ->
    ``precisions[1]``, ``()`` -> ``(top level)``."""
    text = ""
    for part in where:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def _fail(why: str) -> DecodeError:
    return DecodeError([((), why)])


@dataclasses.dataclass(frozen=True)
class Spec:
    """Value rules and documentation of one field. Rules apply to values that are not None."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_length: int | None = None
    pattern: str | None = None
    message: str | None = None  # replaces "String should match pattern ..." when given
    description: str | None = None

    def problems(self, value: Any) -> list[str]:
        found: list[str] = []
        if self.ge is not None and value < self.ge:
            found.append(f"Input should be greater than or equal to {_number(self.ge)}")
        if self.gt is not None and value <= self.gt:
            found.append(f"Input should be greater than {_number(self.gt)}")
        if self.le is not None and value > self.le:
            found.append(f"Input should be less than or equal to {_number(self.le)}")
        if self.min_length is not None and len(value) < self.min_length:
            kind = "String" if isinstance(value, str) else "Tuple"
            items = "item" if self.min_length == 1 else "items"
            found.append(f"{kind} should have at least {self.min_length} {items}, not {len(value)}")
        if self.pattern is not None and not re.search(self.pattern, value):
            found.append(self.message or f"String should match pattern '{self.pattern}'")
        return found


def spec(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    pattern: str | None = None,
    message: str | None = None,
    description: str | None = None,
) -> dict[str, Spec]:
    """Field metadata: ``field(default=1, metadata=spec(ge=1, description="..."))``."""
    rules = Spec(ge, gt, le, min_length, pattern, message, description)
    return {SPEC_KEY: rules}


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def field_spec(item: dataclasses.Field[Any]) -> Spec | None:
    """The :class:`Spec` a field declares in its metadata, if any."""
    found = item.metadata.get(SPEC_KEY)
    return found if isinstance(found, Spec) else None


class Record:
    """Base of codec dataclasses. Subclasses are ``@dataclass(kw_only=True)`` (usually frozen).

    ``extra_fields`` says what decoding does with keys the class does not declare.
    ``__post_init__`` checks the value rules of :func:`spec`; a subclass that adds its own
    checks calls ``super().__post_init__()`` and raises :class:`DecodeError` (or ValueError).
    """

    __slots__ = ()
    extra_fields: ClassVar[Extra] = "ignore"

    def __post_init__(self) -> None:
        ruled = _plan(type(self)).ruled
        if not ruled:
            return
        problems = [
            ((name,), why)
            for name, rules in ruled
            if (value := getattr(self, name)) is not None
            for why in rules.problems(value)
        ]
        if problems:
            raise DecodeError(problems)


# ----------------------------------------------------------------------------- decoding


def decode(cls: type[R], data: Any) -> R:
    """``data`` (as parsed from JSON or YAML) as a ``cls``; :class:`DecodeError` if it does
    not fit."""
    return typing.cast(R, _plan(cls).decode(data))


def from_json(cls: type[R], raw: str | bytes | bytearray) -> R:
    """Parse JSON text and decode it; invalid JSON is a :class:`DecodeError` too."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(f"not valid JSON ({exc})") from exc
    return decode(cls, data)


def _identity(value: Any) -> Any:
    return value


def _int(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        raise _fail("Input should be a valid integer, got a number with a fractional part")
    raise _fail("Input should be a valid integer")


def _float(value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _fail("Input should be a valid number")


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _fail("Input should be a valid string")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _fail("Input should be a valid boolean")


def _none(value: Any) -> None:
    if value is not None:
        raise _fail("Input should be None")


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise _fail("Input should be a valid datetime in ISO 8601 form") from None
    raise _fail("Input should be a valid datetime")


def _choices(values: Sequence[Any]) -> str:
    shown = [repr(value) for value in values]
    if len(shown) == 1:
        return f"Input should be {shown[0]}"
    return f"Input should be {', '.join(shown[:-1])} or {shown[-1]}"


def _literal(allowed: tuple[Any, ...]) -> Decoder:
    keys = {(type(value), value) for value in allowed}
    message = _choices(allowed)

    def decode_literal(value: Any) -> Any:
        if (type(value), value) in keys:
            return value
        if isinstance(value, Enum) and (type(value.value), value.value) in keys:
            return value.value
        raise _fail(message)

    return decode_literal


def _enum(cls: type[Enum]) -> Decoder:
    message = _choices([member.value for member in cls])

    def decode_enum(value: Any) -> Enum:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise _fail(message) from None

    return decode_enum


def _optional(inner: Decoder) -> Decoder:
    if inner is _identity:
        return _identity

    def decode_optional(value: Any) -> Any:
        return None if value is None else inner(value)

    return decode_optional


def _union(options: list[Decoder]) -> Decoder:
    def decode_union(value: Any) -> Any:
        messages: list[str] = []
        for option in options:
            try:
                return option(value)
            except DecodeError as exc:
                messages.append(exc.problems[0][1] if exc.problems else "invalid")
        first, *rest = messages
        raise _fail(first + "".join(f" or {m.removeprefix('Input should be ')}" for m in rest))

    return decode_union


def _sequence(value: Any) -> Sequence[Any]:
    if isinstance(value, list | tuple):
        return value
    raise _fail("Input should be a valid tuple")


def _each(pairs: Iterable[tuple[Decoder, Any]]) -> tuple[Any, ...]:
    """Each value decoded by its decoder; every problem, under its index."""
    out: list[Any] = []
    problems: list[tuple[Location, str]] = []
    for index, (decoder, value) in enumerate(pairs):
        try:
            out.append(decoder(value))
        except DecodeError as exc:
            problems += exc.under(index).problems
    if problems:
        raise DecodeError(problems)
    return tuple(out)


def _items(item: Decoder, values: Sequence[Any]) -> tuple[Any, ...]:
    if item is _identity:
        return tuple(values)
    return _each((item, value) for value in values)


def _tuple_of(item: Decoder) -> Decoder:
    def decode_tuple(value: Any) -> tuple[Any, ...]:
        return _items(item, _sequence(value))

    return decode_tuple


def _fixed_tuple(items: list[Decoder]) -> Decoder:
    def decode_fixed(value: Any) -> tuple[Any, ...]:
        values = _sequence(value)
        if len(values) != len(items):
            raise _fail(f"Tuple should have {len(items)} items, not {len(values)}")
        return _each(zip(items, values, strict=True))

    return decode_fixed


def _dict_of(item: Decoder) -> Decoder:
    def decode_dict(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _fail("Input should be a valid dictionary")
        out: dict[str, Any] = {}
        problems: list[tuple[Location, str]] = []
        for key, raw in value.items():
            if not isinstance(key, str):
                problems.append(((str(key),), "Keys should be strings"))
                continue
            try:
                out[key] = item(raw)
            except DecodeError as exc:
                problems += exc.under(key).problems
        if problems:
            raise DecodeError(problems)
        return out

    return decode_dict


def _nested(cls: type[Record]) -> Decoder:
    def decode_nested(value: Any) -> Any:
        return _plan(cls).decode(value)

    return decode_nested


def _decoder(hint: Any) -> Decoder:
    simple: dict[Any, Decoder] = {
        Any: _identity,
        object: _identity,
        int: _int,
        float: _float,
        str: _str,
        bool: _bool,
        type(None): _none,
        None: _none,
        datetime: _datetime,
    }
    if hint in simple:
        return simple[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return _literal(args)
    if origin is Union or origin is types.UnionType:
        rest = [arg for arg in args if arg is not type(None)]
        inner = _decoder(rest[0]) if len(rest) == 1 else _union([_decoder(a) for a in rest])
        return _optional(inner) if len(rest) < len(args) else inner
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _tuple_of(_decoder(args[0]))
        return _fixed_tuple([_decoder(arg) for arg in args])
    if origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"codec: dict keys must be str, not {args[0]!r}")
        return _dict_of(_decoder(args[1]) if args else _identity)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint)
    if isinstance(hint, type) and issubclass(hint, Record):
        return _nested(hint)
    raise TypeError(f"codec: unsupported field type {hint!r}")


# ----------------------------------------------------------------------------- encoding


def encode(record: Record, *, exclude_none: bool = False) -> dict[str, Any]:
    """The record as JSON-ready data (dicts, lists, str, int, float, bool, None).

    Enums become their values, tuples lists, datetimes ISO 8601 text (``Z`` for UTC), and
    ``Any`` fields are copied with tuples as lists and non-finite floats as None.
    ``exclude_none`` leaves out fields (of this and nested records) whose value is None.
    """
    return _plan(type(record)).encode(record, exclude_none)


def to_json(record: Record, *, indent: int | None = None) -> str:
    """Compact JSON (or indented with ``indent``), UTF-8 text kept as is; NaN and infinities
    are written as null, since JSON has no such numbers. The same document as
    ``json.dumps(encode(record))``, written straight from the record (faster)."""
    separators = (",", ":") if indent is None else (",", ": ")
    try:
        return json.dumps(
            record,
            default=_json_default,
            separators=separators,
            indent=indent,
            ensure_ascii=False,
            allow_nan=False,
        )
    except ValueError:  # a NaN or an infinity somewhere: the slow way, with nulls
        data = _finite(encode(record))
        return json.dumps(data, separators=separators, indent=indent, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: records (one level; it recurses), enums that
    are not str, datetimes. Tuples, lists and str enums it writes as encode() would."""
    if isinstance(value, Record):
        return {name: getattr(value, name) for name in _plan(type(value)).order}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return _iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


def _keep(value: Any, exclude_none: bool) -> Any:
    return value


def _plain(value: Any, exclude_none: bool = False) -> Any:
    """An ``Any`` value as JSON-ready data."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    if kind is dict:
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Record):
        return encode(value, exclude_none=exclude_none)
    return value


def _iso(value: datetime, exclude_none: bool = False) -> str:
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _enum_value(value: Any, exclude_none: bool) -> Any:
    return value.value if isinstance(value, Enum) else value


def _optional_encoder(inner: Encoder) -> Encoder:
    def encode_optional(value: Any, exclude_none: bool) -> Any:
        return None if value is None else inner(value, exclude_none)

    return encode_optional


def _list_encoder(item: Encoder) -> Encoder:
    if item is _keep:
        return lambda value, exclude_none: list(value)
    return lambda value, exclude_none: [item(entry, exclude_none) for entry in value]


def _dict_encoder(item: Encoder) -> Encoder:
    if item is _keep:
        return lambda value, exclude_none: dict(value)
    return lambda value, exclude_none: {k: item(v, exclude_none) for k, v in value.items()}


def _record_encoder(value: Any, exclude_none: bool) -> Any:
    return _plan(type(value)).encode(value, exclude_none)


def _encoder(hint: Any) -> Encoder:
    if hint in (int, float, str, bool, type(None), None):
        return _keep
    if hint is Any or hint is object:
        return _plain
    if hint is datetime:
        return _iso
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return _enum_value if any(isinstance(arg, Enum) for arg in args) else _keep
    if origin is Union or origin is types.UnionType:
        rest = [_encoder(arg) for arg in args if arg is not type(None)]
        if all(item is _keep for item in rest):
            return _keep
        if len(rest) == 1:
            return _optional_encoder(rest[0])
        return _plain
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _list_encoder(_encoder(args[0]))
        items = [_encoder(arg) for arg in args]
        return lambda value, exclude_none: [
            item(entry, exclude_none) for item, entry in zip(items, value, strict=True)
        ]
    if origin is dict:
        return _dict_encoder(_encoder(args[1]) if args else _plain)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum_value
    if isinstance(hint, type) and issubclass(hint, Record):
        return _record_encoder
    raise TypeError(f"codec: unsupported field type {hint!r}")


# ----------------------------------------------------------------------------- plans

_MISSING = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    hint: Any
    declared: dataclasses.Field[Any]
    decoder: Decoder
    encoder: Encoder
    rules: Spec | None
    required: bool


class _Plan:
    """How to decode, check and encode one record class; built once per class."""

    def __init__(self, cls: type[Record]) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"codec: {cls.__name__} is not a dataclass")
        self.cls: type[Record] = cls
        self.name: str = cls.__name__
        self.forbid: bool = cls.extra_fields == "forbid"
        self.fields: list[_Field] = [
            _Field(
                item.name,
                hint,
                item,
                _decoder(hint),
                _encoder(hint),
                field_spec(item),
                item.default is _MISSING and item.default_factory is _MISSING,
            )
            for item, hint in fields_of(cls)
        ]
        self.order: tuple[str, ...] = tuple(item.name for item in self.fields)
        self.names: frozenset[str] = frozenset(self.order)
        self.ruled: tuple[tuple[str, Spec], ...] = tuple(
            (item.name, item.rules) for item in self.fields if item.rules is not None
        )
        self.fast: Callable[[dict[str, Any]], Any] = _fast_decoder(self)

    def decode(self, data: Any) -> Any:
        """Valid data takes the fast path; anything it stops at is decoded again by
        :meth:`check`, which names every problem."""
        if type(data) is dict:
            try:
                return self.fast(data)
            except (KeyError, DecodeError, ValueError):
                pass
        return self.check(data)

    def check(self, data: Any) -> Any:
        if isinstance(data, self.cls):
            return data
        if type(data) is not dict and not isinstance(data, Mapping):
            raise _fail(f"Input should be a valid dictionary or instance of {self.name}")
        values: dict[str, Any] = {}
        problems: list[tuple[Location, str]] = []
        for item in self.fields:
            if item.name not in data:
                if item.required:
                    problems.append(((item.name,), "Field required"))
                continue
            try:
                value = item.decoder(data[item.name])
            except DecodeError as exc:
                problems += exc.under(item.name).problems
                continue
            if item.rules is not None and value is not None:
                problems += [((item.name,), why) for why in item.rules.problems(value)]
            values[item.name] = value
        if self.forbid and len(data) > len(values):
            allowed = ", ".join(item.name for item in self.fields)
            problems += [
                ((key,), f"unknown field, extra fields not permitted (allowed: {allowed})")
                for key in data
                if key not in self.names
            ]
        if problems:
            raise DecodeError(problems)
        try:
            return self.cls(**values)
        except DecodeError:
            raise
        except ValueError as exc:
            raise _fail(str(exc)) from exc

    def encode(self, record: Any, exclude_none: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in self.fields:
            value = getattr(record, item.name)
            if value is None:
                if not exclude_none:
                    out[item.name] = None
                continue
            out[item.name] = item.encoder(value, exclude_none)
        return out


_FAST_TYPES = (str, int, float, bool)


def _fast_decoder(plan: _Plan) -> Callable[[dict[str, Any]], Any]:
    """A function generated for one class that decodes valid data without a loop over its
    fields (as dataclasses generates ``__init__``): a value of the field's exact type is taken
    as is, anything else goes through the field's decoder, and the instance is filled in
    directly (a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    the larger part of the cost) before its ``__post_init__`` checks the rules. Any problem
    raises, and :meth:`_Plan.check` takes over."""
    cls = plan.cls
    direct = "__slots__" not in vars(cls) and all(
        item.init for item in dataclasses.fields(typing.cast(Any, cls))
    )
    env: dict[str, Any] = {"cls": cls, "DecodeError": DecodeError, "new": object.__new__}
    lines = ["def fast(data):"]
    if plan.forbid:
        env["names"] = plan.names
        lines.append("    if not names.issuperset(data): raise DecodeError(())")
    lines.append("    kw = {}")
    for index, item in enumerate(plan.fields):
        env[f"d{index}"] = item.decoder
        origin, args = get_origin(item.hint), get_args(item.hint)
        optional = origin in (Union, types.UnionType) and type(None) in args
        inner = [arg for arg in args if arg is not type(None)] if optional else [item.hint]
        if item.decoder is _identity:
            convert = ""
        elif len(inner) == 1 and inner[0] in _FAST_TYPES:
            env[f"t{index}"] = inner[0]
            none = "v is not None and " if optional else ""
            convert = f"if {none}type(v) is not t{index}: v = d{index}(v)"
        else:
            convert = f"v = d{index}(v)"
        indent = "    " if item.required else "        "
        if not item.required:
            lines.append(f"    if {item.name!r} in data:")
        lines.append(f"{indent}v = data[{item.name!r}]")
        if convert:
            lines.append(f"{indent}{convert}")
        lines.append(f"{indent}kw[{item.name!r}] = v")
        if not item.required and direct:  # the default, as the dataclass __init__ sets it
            if item.declared.default_factory is not _MISSING:
                env[f"f{index}"] = item.declared.default_factory
                lines.append(f"    else:\n        kw[{item.name!r}] = f{index}()")
            else:
                env[f"c{index}"] = item.declared.default
                lines.append(f"    else:\n        kw[{item.name!r}] = c{index}")
    if direct:
        lines += ["    obj = new(cls)", "    obj.__dict__.update(kw)", "    obj.__post_init__()"]
        lines.append("    return obj")
    else:
        lines.append("    return cls(**kw)")
    exec("\n".join(lines), env)  # code built above from field names only
    fast: Callable[[dict[str, Any]], Any] = env["fast"]
    return fast


_PLANS: dict[type[Any], _Plan] = {}
_PLANS_LOCK = threading.Lock()


def _plan(cls: type[Any]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        with _PLANS_LOCK:
            plan = _PLANS.get(cls)
            if plan is None:
                plan = _PLANS[cls] = _Plan(cls)
    return plan


def fields_of(cls: type[Record]) -> list[tuple[dataclasses.Field[Any], Any]]:
    """Each init field of a record with its resolved type hint (for schema generators)."""
    hints = typing.get_type_hints(cls)
    found = dataclasses.fields(typing.cast(Any, cls))
    return [(item, hints[item.name]) for item in found if item.init]
