import datetime as dt
import time

import pytest

from labctl.catalog.query import build_filter, check_filter, parse_sort, parse_where
from labctl.config import DataSchema, FieldSpec
from labctl.errors import ValidationError

SCHEMA = DataSchema(fields={"n_planes": FieldSpec(type="int"), "code": FieldSpec(type="str")})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user=charlie", {"user": {"$eq": "charlie"}}),
        ("runclass.id=ARB-diff", {"runclass.id": {"$eq": "ARB-diff"}}),
        ("n_planes>=10", {"n_planes": {"$gte": 10}}),
        ("n_planes != 3", {"n_planes": {"$ne": 3}}),
        ("n_planes<4", {"n_planes": {"$lt": 4}}),
        ("n_planes>4", {"n_planes": {"$gt": 4}}),
        ("n_planes<=4", {"n_planes": {"$lte": 4}}),
        ("code=007", {"code": {"$eq": "007"}}),  # typed str by the schema, not a number
        ("free=7", {"free": {"$eq": 7}}),  # free field: typed by YAML
        ("user~^ch", {"user": {"$regex": "^ch"}}),
        ("user in charlie, dana", {"user": {"$in": ["charlie", "dana"]}}),
        ("n_planes in 1,2", {"n_planes": {"$in": [1, 2]}}),
        ("comment=a=b", {"comment": {"$eq": "a=b"}}),
    ],
)
def test_where_conditions(text: str, expected: dict[str, object]) -> None:
    assert parse_where(text, SCHEMA) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user", "cannot read condition"),
        ("=x", "cannot read condition"),
        ("$where=1", "cannot read condition"),
        ("a..b=1", "field name"),
        ("user~[", "bad regular expression"),
        ("user~(a)\\1", "bad regular expression.*invalid escape"),  # RE2: no backreferences
        ("user~(?=a)", "bad regular expression"),  # nor lookarounds
        ("day>2021-13-01", "field 'day'"),  # an impossible date was a ValueError: exit 70
        ("x=[&a 1, *a]", "aliases are not allowed"),
        ("user in ,", "at least one value"),
        ("n_planes>many", "must be int"),
    ],
)
def test_bad_conditions(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_where(text, SCHEMA)


@pytest.mark.parametrize("op", ["=>", "=<", "==>", "==", "!=="])
def test_operators_that_do_not_exist_are_refused(op: str) -> None:
    with pytest.raises(ValidationError, match=f"unknown operator '{op}' in 'n_planes{op}10'"):
        parse_where(f"n_planes{op}10", SCHEMA)


def test_build_filter_joins_with_and_and_adds_date_window() -> None:
    flt = build_filter(["user=c", "n_planes>1"], SCHEMA, since="2021-12-01", until="2021-12-31")
    assert flt == {
        "$and": [
            {"user": {"$eq": "c"}},
            {"n_planes": {"$gt": 1}},
            {
                "acquired_at": {
                    "$gte": dt.datetime(2021, 12, 1, tzinfo=dt.UTC),
                    "$lt": dt.datetime(2022, 1, 1, tzinfo=dt.UTC),
                }
            },
        ]
    }
    assert build_filter([], SCHEMA) == {}
    assert build_filter(["user=c"], SCHEMA) == {"user": {"$eq": "c"}}
    until = build_filter([], SCHEMA, until="2021-12-31T12:00:00")
    assert until == {"acquired_at": {"$lte": dt.datetime(2021, 12, 31, 12, tzinfo=dt.UTC)}}
    for bad in ("last week", "0000-01-01", "2021-13-01", "2021-12-15T25:00"):
        with pytest.raises(ValidationError, match="--since takes a date"):
            build_filter([], SCHEMA, since=bad)
    day = build_filter(["day=2021-12-15"], SCHEMA)  # a free field: a YAML date, stored as UTC
    assert day == {"day": {"$eq": dt.datetime(2021, 12, 15, tzinfo=dt.UTC)}}


def test_reading_a_condition_takes_linear_time() -> None:
    started = time.monotonic()
    for text in ["a" + " " * 100_000 + "x", "a" * 100_000 + " ", "a" + " " * 50_000 + "in"]:
        with pytest.raises(ValidationError):
            parse_where(text, SCHEMA)
    assert time.monotonic() - started < 1


def test_check_filter_refuses_operators_outside_the_language() -> None:
    assert check_filter({"user": "c", "n": {"$gt": 1}}) == {"user": "c", "n": {"$gt": 1}}
    with pytest.raises(ValidationError, match="where"):
        check_filter({"n": {"$where": "sleep(1000)"}})
    with pytest.raises(ValidationError, match="bad regular expression"):
        check_filter({"n": {"$regex": "(a)\\1"}})
    with pytest.raises(ValidationError, match="not text"):
        check_filter({"n": {"$regex": 3}})
    with pytest.raises(ValidationError, match="field name"):
        check_filter({"$or": [{"a": 1}]})
    with pytest.raises(ValidationError, match="mapping"):
        check_filter(["user"])


def test_sort() -> None:
    assert parse_sort(["user", "-acquired_at"]) == [("user", 1), ("acquired_at", -1)]
    with pytest.raises(ValidationError):
        parse_sort(["-$x"])
