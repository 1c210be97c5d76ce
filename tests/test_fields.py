import datetime as dt

import pytest

from labctl.catalog.fields import (
    coerce,
    data_json_schema,
    flatten,
    get_dotted,
    new_data_entry,
    parse_assignments,
    parse_dataset_id,
    parse_text,
    set_dotted,
    update_of,
)
from labctl.config import DataSchema, FieldSpec
from labctl.errors import ValidationError
from labctl.users import hash_password, new_user, verify_password

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
        "20211215_093527\n",
        "x",
    ]:
        with pytest.raises(ValidationError):
            parse_dataset_id(bad)


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
    for bad in [("Charlie", "", "member"), ("c", "no-at", "member"), ("c", "", "boss")]:
        with pytest.raises(ValidationError):
            new_user(bad[0], "", bad[1], bad[2], {}, NOW)


def test_assignments() -> None:
    assert parse_assignments(["a=1", "b.c=x=y"], "--set") == {"a": "1", "b.c": "x=y"}
    for bad in ["novalue", "=x", "a b=1", "$set=1"]:
        with pytest.raises(ValidationError):
            parse_assignments([bad], "--set")
