"""Embedder spec option parsing shared by every adapter."""

import pytest

from embedclf.embedders.options import check_options, parse_bool, parse_int
from embedclf.embedders.spec import SpecError


@pytest.mark.parametrize("value,expected", [("1", True), ("TRUE", True), (" on ", True), ("no", False), ("0", False)])
def test_parse_bool_accepts_common_spellings(value, expected):
    assert parse_bool("normalize", value) is expected


def test_parse_bool_rejects_other_words_naming_the_option():
    with pytest.raises(SpecError, match=r"normalize='maybe' is not a boolean"):
        parse_bool("normalize", "maybe")


def test_parse_int():
    assert parse_int("batch_size", " 32 ") == 32
    with pytest.raises(SpecError, match="batch_size='x' is not an integer"):
        parse_int("batch_size", "x")


def test_check_options_lists_unknown_and_known():
    check_options({"a": "1"}, ("a", "b"), "demo")
    with pytest.raises(SpecError, match=r"unknown demo option\(s\) c, d \(known: a, b\)"):
        check_options({"c": "1", "d": "2", "a": "3"}, ("b", "a"), "demo")
