"""The record codec against its published contract: the structs and the JSON Schema agree field by field,
every encoder's output is schema-valid and decodes back, and bad or foreign records are refused by name."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, get_origin

import jsonschema
import msgspec
import pytest

from optionstream_pipeline.records import book
from optionstream_pipeline.records.book import (
    RECORD_TYPES,
    Change,
    Disconnect,
    Gap,
    Level,
    NewLevel,
    RecordError,
    Snapshot,
    Unsubscribed,
    decode_record,
    encode_capture_meta,
)

SCHEMA = json.loads(resources.files("optionstream_pipeline.schemas").joinpath("book-record.schema.json").read_text())
DECODED = {
    "snapshot": Snapshot[list[NewLevel]],
    "change": Change[list[Level]],
    "gap": Gap,
    "disconnect": Disconnect,
    "unsubscribed": Unsubscribed,
}
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
CAPTURE = encode_capture_meta("5f0c3a9e71b2", 3)
NAME = "BTC-24SEP21-8000-P"


# -- the structs and the schema agree -------------------------------------------------------------


def schema_shape(node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with references resolved and documentation dropped, in one spelling."""
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].removeprefix("#/$defs/")]
    shape = {key: value for key, value in node.items() if key not in ("description", "pattern")}
    if "const" in shape:
        shape["enum"] = [shape.pop("const")]
    if "enum" in shape:
        shape["enum"] = sorted(shape["enum"])
    if isinstance(shape.get("type"), list):
        shape["type"] = sorted(shape["type"])
    if "properties" in shape:
        shape["properties"] = {key: schema_shape(value) for key, value in shape["properties"].items()}
        shape["required"] = sorted(shape["required"])
    for key in ("items",):
        if key in shape:
            shape[key] = schema_shape(shape[key])
    if "prefixItems" in shape:
        shape["prefixItems"] = [schema_shape(item) for item in shape["prefixItems"]]
    return shape


def type_shape(info: msgspec.inspect.Type) -> dict[str, Any]:
    """The JSON Schema a msgspec type means, in the same spelling as :func:`schema_shape`."""
    inspect = msgspec.inspect
    if isinstance(info, inspect.IntType | inspect.FloatType):
        shape: dict[str, Any] = {"type": "integer" if isinstance(info, inspect.IntType) else "number"}
        if info.gt is not None:
            shape["exclusiveMinimum"] = info.gt
        if info.ge is not None:
            shape["minimum"] = info.ge
        return shape
    if isinstance(info, inspect.StrType):
        return {"type": "string"}
    if isinstance(info, inspect.NoneType):
        return {"type": "null"}
    if isinstance(info, inspect.LiteralType):
        return {"enum": sorted(info.values)}
    if isinstance(info, inspect.UnionType):
        return {"type": sorted(type_shape(member)["type"] for member in info.types)}
    if isinstance(info, inspect.ListType):
        return {"type": "array", "items": type_shape(info.item_type)}
    if isinstance(info, inspect.TupleType):
        items = [type_shape(item) for item in info.item_types]
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
    if isinstance(info, inspect.StructType):
        properties, required = {}, []
        if info.tag_field is not None:
            properties[info.tag_field] = {"enum": [info.tag]}
            required.append(info.tag_field)
        for field in info.fields:
            field_type = field.type
            if not field.required and field.default is None and info.cls.__struct_config__.omit_defaults:
                # Omitted when None: on the wire the field is absent or of the other type.
                field_type = next(t for t in field_type.types if not isinstance(t, inspect.NoneType))
            properties[field.encode_name] = type_shape(field_type)
            if field.required:
                required.append(field.encode_name)
        shape = {"type": "object", "properties": properties, "required": sorted(required)}
        if info.forbid_unknown_fields:
            shape["additionalProperties"] = False
        return shape
    raise AssertionError(f"no JSON Schema spelling for {info!r}")


def test_the_schema_has_exactly_the_record_types_of_the_codec() -> None:
    assert [branch["$ref"].removeprefix("#/$defs/") for branch in SCHEMA["oneOf"]] == list(RECORD_TYPES)
    assert set(DECODED) == set(RECORD_TYPES)


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_struct_and_schema_agree_on_every_field_type_and_required_key(record_type: str) -> None:
    declared = type_shape(msgspec.inspect.type_info(DECODED[record_type]))
    published = schema_shape(SCHEMA["$defs"][record_type])
    # The one deliberate difference: the decoder reads any version number, so that it can refuse an
    # unknown one by name instead of with a generic type error; the schema pins version 1.
    assert declared["properties"].pop("v") == {"type": "integer"}
    assert published["properties"].pop("v") == {"enum": [book.SCHEMA_VERSION]}
    assert set(declared["properties"]) == set(published["properties"]), "field names"
    for name in declared["properties"]:
        assert declared["properties"][name] == published["properties"][name], name
    assert declared["required"] == published["required"]
    assert declared == published


# -- encoders: schema-valid, and decoded back to the same values ----------------------------------


def encoded_records() -> dict[str, bytes]:
    levels = msgspec.Raw(b'[["new",0.0015,2.6],["new",0.002,10.0]]')
    changes = msgspec.Raw(b'[["change",0.0015,1.5],["delete",0.002,0.0]]')
    return {
        "snapshot": book.encode_snapshot(
            NAME, "100ms", 1626993724318, 1626993724337512, 10, levels, levels, CAPTURE, "resync"
        ),
        "change": book.encode_change(
            NAME, "100ms", 1626993724418, 1626993724437512, 12, 10, changes, msgspec.Raw(b"[]"), CAPTURE
        ),
        "gap": book.encode_gap(NAME, "raw", 1626993724518, 1626993724537512, 20, 15, 12, CAPTURE),
        "disconnect": book.encode_marker(
            "disconnect", NAME, "100ms", 1626993724637512, "connection dropped", encode_capture_meta("5f0c3a9e71b2")
        ),
        "unsubscribed": book.encode_marker(
            "unsubscribed", NAME, "100ms", 1626993724737512, "left the universe", encode_capture_meta("5f0c3a9e71b2")
        ),
    }


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_every_encoded_record_is_schema_valid_and_decodes_to_its_type(record_type: str) -> None:
    value = encoded_records()[record_type]
    VALIDATOR.validate(json.loads(value))
    record = decode_record(value)
    assert record.type == record_type == json.loads(value)["type"]
    assert isinstance(record, get_origin(DECODED[record_type]) or DECODED[record_type])
    assert msgspec.json.decode(msgspec.json.encode(record)) == json.loads(value)  # nothing lost either way


def test_decoded_fields_carry_the_values_written() -> None:
    records = {kind: decode_record(value) for kind, value in encoded_records().items()}
    snapshot, change, gap = records["snapshot"], records["change"], records["gap"]
    assert (snapshot.instrument, snapshot.interval, snapshot.reason) == (NAME, "100ms", "resync")
    assert (snapshot.exchange_timestamp_ms, snapshot.local_timestamp_us) == (1626993724318, 1626993724337512)
    assert snapshot.bids == [("new", 0.0015, 2.6), ("new", 0.002, 10.0)]
    assert (snapshot.capture.id, snapshot.capture.connection) == ("5f0c3a9e71b2", 3)
    assert (change.change_id, change.prev_change_id) == (12, 10)
    assert change.bids == [("change", 0.0015, 1.5), ("delete", 0.002, 0.0)] and change.asks == []
    assert (gap.change_id, gap.prev_change_id, gap.expected_prev_change_id, gap.reason) == (20, 15, 12, "change_id gap")
    assert records["disconnect"].capture.connection is None
    assert records["unsubscribed"].reason == "left the universe"


# -- refusals ----------------------------------------------------------------------------------------


def test_an_unknown_schema_version_is_refused_by_name() -> None:
    value = json.loads(encoded_records()["change"])
    for foreign in ({**value, "v": 2}, {**value, "v": 2, "type": "trade"}, {"v": "2", "type": "change"}):
        with pytest.raises(
            RecordError, match=r"schema version .?2.? is not supported: this OptionStream reads version 1"
        ):
            decode_record(json.dumps(foreign).encode())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"bids": "oops"}, r"Expected `array`, got `str` - at `\$.bids`"),
        ({"bids": [["new", 0.1]]}, r"Expected `array` of length 3 - at `\$.bids\[0\]`"),
        ({"bids": [["new", "0.1", 1.0]]}, r"Expected `float`, got `str` - at `\$.bids\[0\]\[1\]`"),
        ({"asks": [["replace", 0.1, 1.0]]}, r"Invalid enum value 'replace' - at `\$.asks\[0\]\[0\]`"),
        ({"asks": [["new", 0.1, -1.0]]}, r"Expected `float` >= 0.0 - at `\$.asks\[0\]\[2\]`"),
        ({"asks": {"new": 0.1}}, r"Expected `array`, got `object` - at `\$.asks`"),
        ({"prev_change_id": None}, r"Expected `int`, got `null` - at `\$.prev_change_id`"),
        ({"extra": 1}, r"Object contains unknown field `extra`"),
    ],
)
def test_a_record_that_breaks_the_schema_is_refused_naming_the_field(change: dict, expected: str) -> None:
    value = {**json.loads(encoded_records()["change"]), **change}
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(value)
    with pytest.raises(RecordError, match=f"not a valid book record: {expected}"):
        decode_record(json.dumps(value).encode())


def test_a_snapshot_holds_only_new_levels() -> None:
    value = json.loads(encoded_records()["snapshot"])
    value["bids"][0][0] = "change"
    with pytest.raises(RecordError, match=r"Invalid enum value 'change' - at `\$.bids\[0\]\[0\]`"):
        decode_record(json.dumps(value).encode())
