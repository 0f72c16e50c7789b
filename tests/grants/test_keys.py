"""The one rule for keys a device may name (stores/grant_ops.py), and the ops' wire form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.stores.grant_ops import BadOp, Op, Signed, key_problem

#: keys that could leave the user's folder, or that S3 servers read in more than one way
HOSTILE = [
    "",
    "/absolute",
    "a//b",
    "a/",
    ".",
    "..",
    "./a",
    "a/./b",
    "../B/x",
    "a/../../B/x",
    "a/..",
    "a\\..\\..\\B\\x",
    "a\x00b",
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x7fb",
    "\u202egnp.exe",  # right-to-left override
    "a\u200bb",  # zero-width space
    "a\u2028b",  # line separator
    "a\u00a0b",  # no-break space
    "/".join(["x" * 200] * 5),  # over MAX_KEY_BYTES
    "é" * 128,  # a segment over 255 bytes
    "x" * 256,
    "\ud800",
]
#: keys that look like tricks but are literal S3 keys inside the folder
LITERAL = [
    "%2e%2e/B/x",
    "..%2fB/x",
    "%2F..%2F..%2FB",
    "\uff0e\uff0e/B/x",  # fullwidth full stops
    "...",
    "..../B",
    "a..b",
    "?x=1#frag",
    "+ space &amp;",
    "ünï/cödé",
    "users/B/x",
    "~/B",
    "*",
    "/".join(["x" * 255] * 3),
    "é" * 127,
]


@pytest.mark.parametrize("key", HOSTILE, ids=repr)
def test_hostile_keys_are_refused(key):
    assert key_problem(key) is not None
    with pytest.raises(BadOp):
        Op.from_json({"op": "get", "key": key})


@pytest.mark.parametrize("key", LITERAL, ids=repr)
def test_tricky_looking_keys_are_taken_literally(key):
    assert key_problem(key) is None
    assert Op.from_json({"op": "head", "key": key}).key == key


@given(st.text(max_size=60))
def test_no_accepted_key_has_a_segment_that_moves(key):
    if key_problem(key) is None:
        segments = key.split("/")
        assert all(s not in ("", ".", "..") for s in segments)
        assert key.isprintable() and "\\" not in key


def test_list_prefixes():
    assert key_problem("", prefix=True) is None
    assert key_problem("snapshots/", prefix=True) is None
    assert key_problem("snap", prefix=True) is None
    for bad in ("/", "a//", "../", "a/../", 7):
        assert key_problem(bad, prefix=True) is not None, bad


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"op": "copy", "key": "a"},
        {"op": "put", "key": "a"},  # no sha256
        {"op": "put", "key": "a", "sha256": "A" * 64},
        {"op": "put", "key": "a", "sha256": "0" * 64, "if_none_match": "yes"},
        {"op": "put", "key": "a", "sha256": "0" * 64, "if_none_match": True, "if_match": '"e"'},
        {"op": "put", "key": "a", "sha256": "0" * 64, "if_match": "é"},
        {"op": "get", "key": "a", "sha256": "0" * 64},  # a get takes no sha256
        {"op": "get", "key": "a", "bucket": "other"},
        {"op": "list", "prefix": "a", "continuation": "x\n"},
        {"op": "list", "prefix": "a", "continuation": "x" * 2000},
        {"op": "get", "key": "a", "space": "../users"},
        {"op": "list", "key": "a"},  # a list names a prefix
    ],
    ids=repr,
)
def test_malformed_ops_are_refused(data):
    with pytest.raises(BadOp):
        Op.from_json(data)


def test_ops_and_signed_requests_round_trip():
    for op in (
        Op("put", "a/b", sha256="0" * 64, if_match='"etag"'),
        Op("put", "a", sha256="f" * 64, if_none_match=True),
        Op("list", "", continuation="users/A/x"),
        Op("get", "tiles/1.png", space="reference"),
        Op("delete", "a"),
    ):
        assert Op.from_json(op.to_json()) == op
    signed = Signed("PUT", "https://s3/x?sig", {"If-None-Match": "*"})
    assert Signed.from_json(signed.to_json()) == signed
    for bad in ({"method": "POST", "url": "https://x"}, {"method": "GET", "url": "file:///x"}):
        with pytest.raises(ValueError):
            Signed.from_json(bad)
