import datetime as dt
import json
import time

import pytest

from labctl.catalog.fields import (
    check_field_name,
    check_update,
    coerce,
    data_json_schema,
    dataset_text,
    flatten,
    get_dotted,
    new_data_entry,
    parse_assignments,
    parse_dataset_id,
    parse_text,
    set_dotted,
    typed_fields,
    update_of,
)
from labctl.config import DataSchema, FieldSpec
from labctl.errors import ValidationError
from labctl.limits import DOCUMENT_BYTES, FIELDS
from labctl.users import hash_password, new_user, verify_password
from tests.hostile import alias_bomb, nested

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
SCHEMA = DataSchema(
    fields={
        "user": FieldSpec(type="str", required=True),
        "data_raw_path": FieldSpec(type="path", required=True),
        "n_planes": FieldSpec(type="int"),
        "rate": FieldSpec(type="float"),
        "ok": FieldSpec(type="bool"),
        "when": FieldSpec(type="datetime"),
        "day": FieldSpec(type="date"),
        "tags": FieldSpec(type="list"),
        "runclass.id": FieldSpec(type="str"),
    }
)


def test_dataset_id_is_a_real_timestamp() -> None:
    assert parse_dataset_id("20211215_093527") == dt.datetime(
        2021, 12, 15, 9, 35, 27, tzinfo=dt.UTC
    )
    for bad in [
        "2021121_093527",
        "20211215-093527",
        "20211315_093527",
        "20210230_000000",
        "20211215_246000",
        " 20211215_093527",
        "x",
    ]:
        with pytest.raises(ValidationError):
            parse_dataset_id(bad)
    with pytest.raises(ValidationError, match="not of the form"):
        parse_dataset_id("20211215_093527\n")  # `$` of re.match matches before a final newline


def test_a_dataset_id_read_as_a_number_says_to_quote_it() -> None:
    """YAML 1.1 reads an unquoted 20211215_093527 as the integer 20211215093527."""
    assert dataset_text("20211215_093527") == "20211215_093527"
    quote = "dataset ids must be quoted in YAML: '20211215_093527'"
    with pytest.raises(ValidationError, match=quote):
        dataset_text(20211215093527)
    with pytest.raises(ValidationError, match=quote):
        parse_dataset_id(20211215093527)
    with pytest.raises(ValidationError, match="quoted in YAML: 'YYYYMMDD_HHMMSS'"):
        dataset_text(2021121093527)
    with pytest.raises(ValidationError, match="beyond 64 bits was read as a number"):
        dataset_text(16**5000)  # too long to be shown as digits
    with pytest.raises(ValidationError, match="must be text"):
        dataset_text(None)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("int", "12", 12),
        ("int", "12.0", 12),
        ("float", "1.5", 1.5),
        ("float", "2", 2.0),
        ("bool", "true", True),
        ("bool", "no", False),
        ("str", "007", "007"),
        ("path", "/nfs/a b/$(x)", "/nfs/a b/$(x)"),
        ("list", "[a, 2]", ["a", 2]),
        ("datetime", "2021-12-15T09:35:27", dt.datetime(2021, 12, 15, 9, 35, 27, tzinfo=dt.UTC)),
        (
            "datetime",
            "2021-12-15 09:35:27+01:00",
            dt.datetime(2021, 12, 15, 9, 35, 27, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ),
        ("date", "2021-12-15", dt.datetime(2021, 12, 15, tzinfo=dt.UTC)),
    ],
)
def test_values_are_typed_by_the_schema(kind: str, text: str, expected: object) -> None:
    value = coerce("f", text, kind)  # type: ignore[arg-type]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("int", "1.5"),
        ("int", "true"),
        ("int", "abc"),
        ("float", "x"),
        ("bool", "maybe"),
        ("datetime", "yesterday"),
        ("list", "a"),
        ("path", ""),
        ("str", "{a: 1}"),
    ],
)
def test_bad_values_name_the_field(kind: str, text: str) -> None:
    with pytest.raises(ValidationError, match=f"field 'f' must be {kind}"):
        coerce("f", text if kind != "str" else {"a": 1}, kind)  # type: ignore[arg-type]


def test_free_values_are_typed_by_yaml() -> None:
    assert parse_text("3", "f") == 3
    assert parse_text("2.5", "f") == 2.5
    assert parse_text("true", "f") is True
    assert parse_text("[1, 2]", "f") == [1, 2]
    assert parse_text("hello world", "f") == "hello world"
    assert parse_text("", "f") == ""
    assert parse_text("null", "f") is None
    assert parse_text("a: [", "f") == "a: ["  # not YAML: kept as text
    assert parse_text("2021-12-15", "f") == dt.datetime(2021, 12, 15, tzinfo=dt.UTC)


def test_yaml_values_have_no_aliases_and_bounded_depth() -> None:
    """A "billion laughs" of 431 bytes is refused at once, before anything is expanded."""
    started = time.monotonic()
    with pytest.raises(ValidationError, match="field 'x': YAML anchors and aliases are not"):
        parse_text(alias_bomb(), "x")
    with pytest.raises(ValidationError, match="aliases"):
        parse_text("[&a 1, *a]", "x")
    assert parse_text(nested(20), "x") == json.loads(nested(20))
    for depth in (21, 100_000):  # the second was a RecursionError: exit 70
        with pytest.raises(ValidationError, match="nested deeper than 20 levels"):
            parse_text(nested(depth), "x")
    with pytest.raises(ValidationError, match="longer than"):
        parse_text("x" * (DOCUMENT_BYTES + 1), "x")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("text", ["0000-01-01", "2021-13-01", "2021-02-30", "2021-12-15 25:00:00"])
@pytest.mark.parametrize("kind", ["date", "datetime", None])
def test_impossible_dates_are_one_clear_line(text: str, kind: str | None) -> None:
    """These were a ValueError out of YAML's timestamp reader: exit 70 / HTTP 500."""
    schema = DataSchema(fields={"day": FieldSpec(type=kind)} if kind else {})
    with pytest.raises(ValidationError, match="field 'day'") as refused:
        typed_fields({"day": text}, schema)
    assert "\n" not in str(refused.value)


def test_new_entry_types_nests_and_stamps() -> None:
    doc = new_data_entry(
        "20211215_093527",
        {
            "user": "charlie",
            "data_raw_path": "/nfs/x",
            "runclass.id": "ARB-diff",
            "n_planes": "12",
            "comment": "first try",
            "fish.age": "6",
        },
        SCHEMA,
        "lead",
        NOW,
    )
    assert doc["dataset"] == "20211215_093527"
    assert doc["acquired_at"] == dt.datetime(2021, 12, 15, 9, 35, 27, tzinfo=dt.UTC)
    assert doc["runclass"] == {"id": "ARB-diff"}
    assert doc["fish"] == {"age": 6}
    assert doc["n_planes"] == 12
    assert doc["created_by"] == doc["updated_by"] == "lead"
    assert doc["created_at"] == doc["updated_at"] == NOW


def test_required_and_managed_fields() -> None:
    with pytest.raises(ValidationError, match=r"missing required field.*data_raw_path"):
        new_data_entry("20211215_093527", {"user": "c"}, SCHEMA, "x", NOW)
    with pytest.raises(ValidationError, match=r"missing required field.*user"):
        new_data_entry("20211215_093527", {"user": "", "data_raw_path": "/x"}, SCHEMA, "x", NOW)
    with pytest.raises(ValidationError, match="set by labctl"):
        new_data_entry(
            "20211215_093527",
            {"user": "c", "data_raw_path": "/x", "created_by": "me"},
            SCHEMA,
            "x",
            NOW,
        )
    with pytest.raises(ValidationError, match="field name"):
        new_data_entry(
            "20211215_093527", {"user": "c", "data_raw_path": "/x", "$where": "1"}, SCHEMA, "x", NOW
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": str(2**70)}, "cannot be stored: beyond 64-bit integers"),
        ({"n_planes": 2**70}, "cannot be stored: beyond 64-bit integers"),
        ({"n": [1, -(2**63) - 1]}, "beyond 64-bit"),
        ({"cond": "{$gt: 1}"}, "key '\\$gt' looks like an operator"),
        ({"cond": {"a": [{"$where": "x"}]}}, "looks like an operator"),
        ({"cond": {"a.b": 1}}, "without '.' or NUL"),
        ({"cond": {"a\0": 1}}, "without '.' or NUL"),
        ({"cond": {"": 1}}, "1 to 128 characters"),
        ({"cond": {"k" * 129: 1}}, "1 to 128 characters"),
        ({"cond": "{1: a}"}, "key 1 is not text"),
        ({"cond": "!!set {a, b}"}, "a set cannot be stored"),
        ({"cond": {"x": dt.date(2021, 1, 1)}}, "a date cannot be stored"),
        ({"a.b.c": json.loads(nested(19))}, "nested deeper than 20 levels"),
        ({".".join(["a"] * 11): 1}, "at most 10 parts of 128 characters"),
        ({"a" * 129: 1}, "at most 10 parts of 128 characters"),
        ({".".join(["a"] * 100_000): 1}, "at most 10 parts"),  # was a RecursionError
        ({"_id": "x"}, "'_id' is set by labctl"),
        ({"dataset.x": "y"}, "'dataset.x' is set by labctl"),
        ({"created_by.name": "y"}, "set by labctl"),
        ({"n": 2**20000}, "an integer of 20001 bits cannot be stored"),  # was a ValueError
        ({"n_planes": 2**20000}, "an integer of 20001 bits cannot be stored"),
        ({"user": 2**20000}, "must be str, got an integer of 20001 bits"),
        ({"rate": float("nan")}, "nan cannot be stored: not a finite number"),
        ({"rate": "-.inf"}, "-inf cannot be stored: not a finite number"),
        ({"n": {"a": [float("inf")]}}, "inf cannot be stored: not a finite number"),
        ({"n_planes": float("inf")}, "must be int"),
        ({"user": "charlie\0"}, "field 'user' must be str.*contains a NUL byte"),
        ({"runclass.id": "a\0b"}, "contains a NUL byte"),
        ({"data_raw_path": "/x\0"}, "contains a NUL byte"),
    ],
)
def test_values_the_store_cannot_hold_are_refused_at_input(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        typed_fields(fields, SCHEMA)


def test_a_whole_entry_is_bounded() -> None:
    base = {"user": "c", "data_raw_path": "/x"}
    many = {f"f{i}": i for i in range(FIELDS)}
    with pytest.raises(ValidationError, match=f"more than the {FIELDS} an entry may have"):
        new_data_entry("20211215_093527", {**base, **many}, SCHEMA, "x", NOW)
    big = {f"f{i}": "x" * 100_000 for i in range(10)}
    with pytest.raises(ValidationError, match="bytes as stored, more than the 1,000,000"):
        new_data_entry("20211215_093527", {**base, **big}, SCHEMA, "x", NOW)


def test_an_update_is_checked_against_the_entry_it_changes() -> None:
    entry = new_data_entry(
        "20211215_093527", {"user": "c", "data_raw_path": "/x", "a": "1"}, SCHEMA, "x", NOW
    )
    check_update(entry, update_of({"b": "2"}, SCHEMA, "x", NOW))
    with pytest.raises(ValidationError, match="conflicts with the plain value of 'a'"):
        check_update(entry, update_of({"a.b": "2"}, SCHEMA, "x", NOW))
    entry["blob"] = "x" * 600_000
    with pytest.raises(ValidationError, match="bytes as stored"):
        check_update(entry, update_of({"blob2": "y" * 600_000}, SCHEMA, "x", NOW))


def test_update_sets_dotted_fields_and_keeps_required_ones() -> None:
    change = update_of({"runclass.id": "B", "n_planes": "3"}, SCHEMA, "dana", NOW)
    assert change == {
        "$set": {"runclass.id": "B", "n_planes": 3, "updated_by": "dana", "updated_at": NOW}
    }
    with pytest.raises(ValidationError, match="cannot be emptied"):
        update_of({"user": ""}, SCHEMA, "dana", NOW)


def test_dotted_helpers() -> None:
    doc: dict[str, object] = {}
    set_dotted(doc, "a.b.c", 1)
    set_dotted(doc, "a.d", 2)
    assert doc == {"a": {"b": {"c": 1}, "d": 2}}
    assert get_dotted(doc, "a.b.c") == 1
    assert get_dotted(doc, "a.x.y") is None
    assert flatten(doc) == {"a.b.c": 1, "a.d": 2}
    with pytest.raises(ValidationError, match="conflicts"):
        set_dotted(doc, "a.d.e", 3)


def test_json_schema_requires_top_level_required_fields() -> None:
    schema = data_json_schema(SCHEMA)
    assert schema["required"] == ["dataset", "acquired_at", "user", "data_raw_path"]


def test_users_and_passwords() -> None:
    user = new_user("charlie", "Charlie B", "c@lab.org", "admin", {"raven": "abc123"}, NOW)
    assert user["password_hash"] is None
    assert user["hpc_accounts"] == {"raven": "abc123"}
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong horse")
    assert not verify_password(None, "anything")
    assert not verify_password("not-a-hash", "anything")
    with pytest.raises(ValidationError, match="at least 8"):
        hash_password("short")
    for bad in [
        ("Charlie", "", "member"),
        ("c", "no-at", "member"),
        ("c", "", "boss"),
        ("charlie\n", "", "member"),
        ("c", "c@lab.org\n", "member"),
    ]:
        with pytest.raises(ValidationError):
            new_user(bad[0], "", bad[1], bad[2], {}, NOW)


def test_field_names_with_a_trailing_newline_are_refused() -> None:
    assert check_field_name("runclass.id") == "runclass.id"
    for bad in ["runclass.id\n", "user\n"]:
        with pytest.raises(ValidationError, match="field name"):
            check_field_name(bad)


def test_assignments() -> None:
    assert parse_assignments(["a=1", "b.c=x=y"], "--set") == {"a": "1", "b.c": "x=y"}
    for bad in ["novalue", "=x", "a b=1", "$set=1"]:
        with pytest.raises(ValidationError):
            parse_assignments([bad], "--set")
