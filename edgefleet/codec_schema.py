"""JSON Schema (draft 2020-12) of :mod:`edgefleet.codec` records, for editors and docs.

A development-side tool (``hardware_profiles/schema.json`` is generated with it); the agent
never imports it. Field types, defaults, :func:`~edgefleet.codec.spec` rules and
descriptions, class and enum docstrings and ``extra_fields = "forbid"`` all appear in the
schema. Keys are laid out as pydantic laid them out, so the committed schema did not change
when the models moved off pydantic.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from datetime import datetime
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin

from edgefleet.codec import Record, Spec, encode, field_spec, fields_of

Schema = dict[str, Any]

_SCALARS: dict[Any, Schema] = {
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    datetime: {"format": "date-time", "type": "string"},
}


def json_schema(cls: type[Record]) -> Schema:
    """The schema of ``cls``, with every record and enum it uses under ``$defs``."""
    defs: dict[str, Schema] = {}
    top = _record(cls, defs)
    return {"$defs": dict(sorted(defs.items())), **top} if defs else top


def _doc(cls: type[Any]) -> str | None:
    doc = cls.__dict__.get("__doc__")
    if not doc or (dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}(")):
        return None  # none written (dataclass fills in its signature)
    return inspect.cleandoc(doc)


def _sorted(schema: Schema) -> Schema:
    return dict(sorted(schema.items()))


def _record(cls: type[Record], defs: dict[str, Schema]) -> Schema:
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for item, hint in fields_of(cls):
        properties[item.name] = _property(item, hint, defs)
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            required.append(item.name)
    schema: Schema = {"properties": properties, "title": cls.__name__, "type": "object"}
    if cls.extra_fields == "forbid":
        schema["additionalProperties"] = False
    if (doc := _doc(cls)) is not None:
        schema["description"] = doc
    if required:
        schema["required"] = required
    return _sorted(schema)


def _property(item: dataclasses.Field[Any], hint: Any, defs: dict[str, Schema]) -> Schema:
    rules = field_spec(item) or Spec()
    schema = _type(hint, defs, rules)
    if item.default is not dataclasses.MISSING:
        schema["default"] = _json(item.default)
    if rules.description is not None:
        schema["description"] = rules.description
    if "$ref" not in schema:
        schema["title"] = item.name.replace("_", " ").title()
    return _sorted(schema)


def _json(value: Any) -> Any:
    if isinstance(value, Record):
        return encode(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_json(entry) for entry in value]
    return value


def _constrained(schema: Schema, rules: Spec) -> Schema:
    kind = schema.get("type")
    if rules.ge is not None:
        schema["minimum"] = rules.ge
    if rules.gt is not None:
        schema["exclusiveMinimum"] = rules.gt
    if rules.le is not None:
        schema["maximum"] = rules.le
    if rules.min_length is not None:
        schema["minItems" if kind == "array" else "minLength"] = rules.min_length
    if rules.pattern is not None:
        schema["pattern"] = rules.pattern
    return _sorted(schema)


def _type(hint: Any, defs: dict[str, Schema], rules: Spec) -> Schema:
    """The schema of one type; ``rules`` apply to it (to the non-null branch of ``X | None``)."""
    if hint in _SCALARS:
        return _constrained(dict(_SCALARS[hint]), rules)
    if hint is Any or hint is object:
        return {}
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        kind = _SCALARS[type(args[0])]["type"]
        values: Schema = {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
        return _sorted({**values, "type": kind})
    if origin is Union or origin is types.UnionType:
        options = [_type(arg, defs, rules if arg is not type(None) else Spec()) for arg in args]
        return {"anyOf": options}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _constrained({"items": _type(args[0], defs, Spec()), "type": "array"}, rules)
        items = [_type(arg, defs, Spec()) for arg in args]
        size = len(items)
        return {"maxItems": size, "minItems": size, "prefixItems": items, "type": "array"}
    if origin is dict:
        value = _type(args[1], defs, Spec()) if args else {}
        return {"additionalProperties": value, "type": "object"}
    if isinstance(hint, type) and issubclass(hint, Enum):
        enum: Schema = {"enum": [m.value for m in hint], "title": hint.__name__, "type": "string"}
        if (doc := _doc(hint)) is not None:
            enum["description"] = doc
        defs[hint.__name__] = _sorted(enum)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    if isinstance(hint, type) and issubclass(hint, Record):
        if hint.__name__ not in defs:
            defs[hint.__name__] = {}  # placeholder: a record that refers to itself stops here
            defs[hint.__name__] = _record(hint, defs)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    raise TypeError(f"codec_schema: unsupported field type {hint!r}")
