"""Output record schemas: one definition, in JSON Schema, mapped to Arrow.

The canonical definitions are the JSON Schema (draft 2020-12) files shipped as
package data in ``nerbatch/schemas/`` (the top-level ``schemas/`` folder holds
symlinks to them).  Everything else is derived from them:

* :func:`entity_arrow_schema` / :func:`error_arrow_schema` /
  :func:`outcome_arrow_schema` map the JSON Schema
  to a ``pyarrow.Schema`` for the parquet writers;
* :func:`validate_record` checks a record dict against the JSON Schema;
* :data:`ENTITY_LABELS` and :data:`ENTITY_FIELDS` are read from the schema.

JSON Schema -> Arrow mapping (:func:`arrow_type`), for the types the schemas use:

==============  =============
JSON Schema     Arrow
==============  =============
``string``      ``string``
``integer``     ``int64``
``number``      ``float64``
``boolean``     ``bool``
==============  =============

A field is nullable exactly when its ``type`` admits ``"null"`` or it is not
listed in ``required``.  Columns come in the order of ``properties``, then the
kept fields in the order the caller gave them.  Kept document fields are typed
by the schema's ``additionalProperties`` (nullable string): a kept value is
stored as the string itself, any other JSON value as its compact JSON text
(``42`` -> ``"42"``, ``true`` -> ``"true"``, ``{"a": 1}`` -> ``'{"a":1}'``),
and a missing value as null; see :func:`kept_value`.  Typing them as strings
keeps the output schema independent of what each input file happens to
contain, so files from different runs and inputs always concatenate.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import pyarrow as pa

from nerbatch.errors import OutputError

__all__ = [
    "ENTITY_FIELDS",
    "ENTITY_LABELS",
    "ENTITY_SCHEMA_NAME",
    "JsonInteger",
    "JsonNumber",
    "MODEL_ID_PART",
    "ERROR_FIELDS",
    "ERROR_SCHEMA_NAME",
    "DOCUMENT_SCHEMA_NAME",
    "OUTCOME_SCHEMA_NAME",
    "RECORD_SCHEMA_METADATA_KEY",
    "arrow_schema_from_json_schema",
    "arrow_type",
    "entity_arrow_schema",
    "error_arrow_schema",
    "error_record",
    "outcome_arrow_schema",
    "outcome_columns",
    "kept_value",
    "load_schema",
    "validate_record",
]

ENTITY_SCHEMA_NAME = "entity_record.v1"
ERROR_SCHEMA_NAME = "error_record.v1"
DOCUMENT_SCHEMA_NAME = "document.v1"
OUTCOME_SCHEMA_NAME = "document_outcome.v1"

#: Arrow schema metadata key naming the JSON Schema a file's records follow;
#: it ends up in the parquet file's key-value metadata.
RECORD_SCHEMA_METADATA_KEY = "nerbatch.record_schema"

_SCALAR_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


@functools.cache
def _schema_text(name: str) -> str:
    resource = resources.files("nerbatch").joinpath("schemas", f"{name}.json")
    return resource.read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """Return the JSON Schema ``name`` (e.g. ``"entity_record.v1"``) as a fresh dict.

    Read from the installed package data, so it works in a non-editable install.
    Raises ``FileNotFoundError`` for an unknown name.
    """
    return json.loads(_schema_text(name))


def _json_types(prop: Mapping[str, Any]) -> list[str]:
    t = prop.get("type")
    if t is None:
        raise ValueError(f"JSON Schema property has no 'type': {prop!r}")
    return [t] if isinstance(t, str) else list(t)


def arrow_type(prop: Mapping[str, Any]) -> tuple[pa.DataType, bool]:
    """Map one JSON Schema property to ``(arrow type, admits null)``.

    Supports a single scalar type optionally united with ``"null"``; anything
    else raises ``ValueError`` rather than guessing.
    """
    types = _json_types(prop)
    nullable = "null" in types
    scalar = [t for t in types if t != "null"]
    if len(scalar) != 1 or scalar[0] not in _SCALAR_TYPES:
        raise ValueError(f"no Arrow mapping for JSON Schema type {prop.get('type')!r}")
    return _SCALAR_TYPES[scalar[0]], nullable


def arrow_schema_from_json_schema(
    schema: Mapping[str, Any], extra_fields: Sequence[str] = ()
) -> pa.Schema:
    """Derive an Arrow schema from an object JSON Schema (see module docstring)."""
    required = set(schema.get("required", ()))
    fields = []
    for name, prop in schema["properties"].items():
        typ, admits_null = arrow_type(prop)
        fields.append(pa.field(name, typ, nullable=admits_null or name not in required))
    if extra_fields:
        extra = schema.get("additionalProperties", False)
        if not isinstance(extra, Mapping):
            raise ValueError(f"schema {schema.get('$id')!r} admits no additional properties")
        typ, _ = arrow_type(extra)
        fields.extend(pa.field(name, typ, nullable=True) for name in extra_fields)
    return pa.schema(fields)


def _encodes_as_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: an argument's bytes that were not UTF-8
        return False
    return True


def normalise_keep_fields(keep_fields: Sequence[str]) -> list[str]:
    """Kept field names, first occurrence of each; ``OutputError`` for one a record could not hold."""
    if isinstance(keep_fields, str):
        raise TypeError("keep_fields must be a sequence of field names, not a string")
    out: list[str] = []
    for name in keep_fields:
        if not isinstance(name, str) or not name:
            raise OutputError(f"kept field name must be a non-empty string, got {name!r}")
        if not _encodes_as_utf8(name):  # a column name, in every output format
            raise OutputError(f"kept field name {name!r} is not valid UTF-8")
        # Column names are compared without case by DuckDB, Spark and Hive: `Text` would read as `text`.
        # (lower(), not casefold(): no reader takes `Straße` for `STRASSE`.)
        record_field = next((f for f in ENTITY_FIELDS if f.lower() == name.lower()), None)
        if record_field is not None:
            raise OutputError(
                f"kept field {name!r} collides with the entity record field {record_field!r} (readers such as "
                f"DuckDB and Spark compare column names without case); entity record fields are: "
                f"{', '.join(ENTITY_FIELDS)}"
            )
        if name in out:
            continue
        twin = next((kept for kept in out if kept.lower() == name.lower()), None)
        if twin is not None:
            raise OutputError(f"kept fields {twin!r} and {name!r} differ only in case, which readers such as "
                              "DuckDB and Spark cannot tell apart as columns; keep one of them")
        out.append(name)
    return out


def entity_arrow_schema(keep_fields: Sequence[str] = ()) -> pa.Schema:
    """Arrow schema of entity records: the eight record fields, then ``keep_fields``.

    Kept fields are nullable strings (see :func:`kept_value`); duplicates are
    dropped, first occurrence wins.  Raises ``OutputError`` when a kept field
    is named like a record field (``doc_id``, ``text``, ``label``...), since the
    record could not hold both.  The schema metadata carries
    ``{RECORD_SCHEMA_METADATA_KEY: "entity_record.v1"}``.
    """
    keep = normalise_keep_fields(keep_fields)
    schema = arrow_schema_from_json_schema(load_schema(ENTITY_SCHEMA_NAME), keep)
    return schema.with_metadata({RECORD_SCHEMA_METADATA_KEY: ENTITY_SCHEMA_NAME})


def error_arrow_schema() -> pa.Schema:
    """Arrow schema of error records (source, position, doc_id, reason, raw)."""
    schema = arrow_schema_from_json_schema(load_schema(ERROR_SCHEMA_NAME))
    return schema.with_metadata({RECORD_SCHEMA_METADATA_KEY: ERROR_SCHEMA_NAME})


def outcome_arrow_schema() -> pa.Schema:
    """Arrow schema of document outcomes (source, position, doc_id, outcome, entities, error, model)."""
    schema = arrow_schema_from_json_schema(load_schema(OUTCOME_SCHEMA_NAME))
    return schema.with_metadata({RECORD_SCHEMA_METADATA_KEY: OUTCOME_SCHEMA_NAME})


_ENTITY = load_schema(ENTITY_SCHEMA_NAME)
#: The entity record's own fields, in column order.
ENTITY_FIELDS: tuple[str, ...] = tuple(_ENTITY["properties"])
#: The entity labels the schema allows.
ENTITY_LABELS: tuple[str, ...] = tuple(_ENTITY["properties"]["label"]["enum"])
#: A model name, and its version: records carry name@version (the schemas' "model" pattern).
MODEL_ID_PART = re.compile(r"[^@\s]+")
#: The error record's fields, in column order.
ERROR_FIELDS: tuple[str, ...] = tuple(load_schema(ERROR_SCHEMA_NAME)["properties"])
del _ENTITY


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    item = getattr(value, "item", None)  # numpy / arrow scalars
    if callable(item):
        return item()
    return str(value)


class JsonNumber(float):
    """A JSON number written with a fraction or an exponent, read as a ``float`` that keeps its
    literal, so that a kept field gives back the digits its document wrote: float64 holds about
    17 significant digits, and ``1e400`` would become infinite."""

    __slots__ = ("literal",)

    def __new__(cls, literal: str) -> JsonNumber:
        number = super().__new__(cls, literal)
        number.literal = literal
        return number


class JsonInteger(JsonNumber):
    """A JSON integer longer than Python converts to an ``int`` (4,300 digits by default), kept as its literal."""

    __slots__ = ()


def _compact_json(value: Any) -> str:
    # json.dumps writes a float subclass as the float; a JsonNumber has to be written as its literal.
    # Plain loops, one frame per level of nesting, so this nests about as deep as json.dumps does.
    if isinstance(value, JsonNumber):
        return value.literal
    if isinstance(value, decimal.Decimal) and value.is_finite():  # a parquet decimal, nested: a number, as at the top
        return str(value)
    if isinstance(value, decimal.Decimal) or isinstance(value, float) and not math.isfinite(value):
        return "null"  # NaN and Infinity are not JSON: strict parsers (Go, Java, JavaScript) refuse the whole field
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            key = key if isinstance(key, str) else kept_value(key) or "null"  # as json.dumps writes keys
            items.append(json.dumps(key, ensure_ascii=False) + ":" + _compact_json(item))
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            items.append(_compact_json(item))
        return "[" + ",".join(items) + "]"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def whole_float_text(value: float) -> str | None:
    """The integer a float without a fraction holds (``7.0`` -> ``"7"``), else None; also None beyond
    2**53, where a float may no longer be the integer that was written."""
    value = float(value)  # numpy's float16/32 too
    if math.isfinite(value) and value.is_integer() and abs(value) <= 2**53:
        return str(int(value))
    return None


def kept_value(value: Any) -> str | None:
    """Normalise a kept document field to its stored form: ``str`` or ``None``.

    ``None`` stays ``None`` and a string stays as it is.  A date/time becomes
    its ISO 8601 text, bytes their UTF-8 text (bad bytes as ``\\xNN``), a
    numpy/arrow scalar its Python value's form; a float without a fraction
    its integer (``7.0`` -> ``"7"``, as for ids); any other value (number,
    boolean, array, object) becomes its compact JSON text with
    ``ensure_ascii=False`` (``42`` -> ``"42"``, ``True`` -> ``"true"``,
    ``{"a": 1}`` -> ``'{"a":1}'``); a :class:`JsonNumber` keeps its literal
    (``19.90`` -> ``"19.90"``).  A float NaN or infinity becomes ``NaN`` /
    ``Infinity`` (the string, not JSON); inside an array or object it is
    ``null``, so that the field stays valid JSON.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time, bytes, bytearray, memoryview)):
        return _json_default(value)
    if not isinstance(value, (int, float, list, tuple, dict)):
        item = getattr(value, "item", None)  # numpy / arrow scalars
        if callable(item):
            return kept_value(item())
        return str(value)
    if isinstance(value, float) and not isinstance(value, JsonNumber):
        if not math.isfinite(value):
            return json.dumps(value)  # the text NaN / Infinity: at the top level a kept value need not be JSON
        if (whole := whole_float_text(value)) is not None:
            return whole  # as ids are: pandas writes an integer column with missing values as float64
    return _compact_json(value)


def error_record(error: Any) -> dict[str, Any]:
    """The error-record dict of a ``DocumentError`` (or anything with its attributes)."""
    return {name: getattr(error, name) for name in ERROR_FIELDS}


def outcome_columns(source: str, documents: Sequence[Any], entities: Sequence[int], failed: Sequence[Any],
                    model: str) -> dict[str, list]:
    """Document-outcome columns of annotated ``documents`` (with their entity counts) and ``failed``
    documents (``DocumentError``), all from ``source``, sorted by position."""
    from nerbatch.documents import reason_kind

    rows = [(d.position, d.doc_id, "entities" if n else "no_entities", n, None) for d, n in zip(documents, entities)]
    rows += [(e.position, e.doc_id, "failed", 0, reason_kind(e.reason)) for e in failed]
    rows.sort(key=lambda row: row[0])
    return {
        "source": [source] * len(rows),
        "position": [r[0] for r in rows],
        "doc_id": [r[1] for r in rows],
        "outcome": [r[2] for r in rows],
        "entities": [r[3] for r in rows],
        "error": [r[4] for r in rows],
        "model": [model] * len(rows),
    }


@functools.cache
def _validator(name: str):
    import jsonschema

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_record(record: Mapping[str, Any], schema: str = ENTITY_SCHEMA_NAME) -> None:
    """Validate ``record`` against the JSON Schema ``schema`` (entity record by default).

    Raises ``jsonschema.ValidationError`` on the first problem.  Meant for tests
    and spot checks; the writers rely on the Arrow schema instead.
    """
    _validator(schema).validate(dict(record))
