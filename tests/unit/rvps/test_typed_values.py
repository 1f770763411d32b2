"""``register --type`` parsing and its inverse, the commands ``policy test --suggest`` prints."""

from __future__ import annotations

import shlex

import pytest

from custodes.errors import ConfigError
from custodes.rvps.typed_values import parse_value, register_command, register_words
from custodes.types.json import Json


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("1", "string", "1"),
        ("0x1", "string", "0x1"),
        ("1e5", "string", "1e5"),  # a hex digest of digits stays text unless told
        ("1", "number", 1),
        ("-3", "number", -3),
        ("1.5", "number", 1.5),
        ("true", "bool", True),
        ("false", "bool", False),
        ('"1"', "json", "1"),
        ("[1, 2]", "json", [1, 2]),
        ("null", "json", None),
    ],
)
def test_parse_value(text: str, kind: str, value: Json) -> None:
    parsed = parse_value(text, kind)  # type: ignore[arg-type]
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("abc", "number", "is not JSON"),
        ("true", "number", "is not a number"),
        ('"1"', "number", "is not a number"),
        ("NaN", "number", "is not JSON"),
        ("Infinity", "number", "is not JSON"),
        ("1e999", "number", "is not a number"),
        ("yes", "bool", "is not true or false"),
        ("{", "json", "is not JSON"),
    ],
)
def test_parse_value_errors(text: str, kind: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_value(text, kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (["1"], ["svn", "1"]),
        (["1", "2"], ["svn", "1", "2"]),
        (1, ["--type", "number", "--single", "svn", "1"]),
        ([10, 25], ["--type", "number", "svn", "10", "25"]),
        (False, ["--type", "bool", "--single", "svn", "false"]),
        ("abc", ["--single", "svn", "abc"]),
        (["-1"], ["--", "svn", "-1"]),
        ([1, "a"], ["--type", "json", "svn", "1", '"a"']),
        ([], ["--type", "json", "--single", "svn", "[]"]),
        ({"a": [1]}, ["--type", "json", "--single", "svn", '{"a":[1]}']),
        (None, ["--type", "json", "--single", "svn", "null"]),
    ],
)
def test_register_words(value: Json, words: list[str]) -> None:
    assert register_words("svn", value) == [
        "custodes",
        "admin",
        "reference-value",
        "register",
        *words,
    ]
    assert shlex.split(register_command("svn", value)) == register_words("svn", value)
