"""The upload's hand-built Firestore writes equal the client's own, message for message.

``FirestoreRemote.push`` builds each create and update as a protobuf directly
(``stores/firestore_writes.py``) rather than through ``WriteBatch.create`` and
``update``. Whatever the document holds, the message must be the one the
client would have sent: same fields and values, same mask, same precondition,
same server timestamp. The emulator tests (test_firestore.py and the contract
suite) then show the store accepts them.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.field_path import FieldPath
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.codec import to_native
from replicator.stores.firestore_writes import document_write, value_pb
from tests.models import Note

NAME = "projects/p/databases/(default)/documents/users/u/note/0f6e"
STAMP = "changedAt"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=-7))]),
    ),
)
# field names as a table's columns and a JSON column's keys have them: dots, spaces,
# back-ticks and non-ASCII included (never the empty name, which Firestore refuses)
names = st.text(min_size=1, max_size=12).filter(lambda k: k != STAMP)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(scalars, max_size=4),  # Firestore holds no array directly in an array
        st.dictionaries(names, inner, max_size=4),
    ),
    max_leaves=12,
)
documents = st.dictionaries(names, values, min_size=1, max_size=8)


def quoted(key: str) -> str:
    """A field name as ``update()`` takes it: one path element, whatever it holds."""
    return FieldPath(key).to_api_repr()


def theirs_create(data):
    return _helpers.pbs_for_create(NAME, {**data, STAMP: firestore.SERVER_TIMESTAMP})[0]._pb


def theirs_update(data, when):
    option = _helpers.LastUpdateOption(when)
    fields = {quoted(k): v for k, v in data.items()}
    fields[STAMP] = firestore.SERVER_TIMESTAMP
    return _helpers.pbs_for_update(NAME, fields, option)[0]._pb


@settings(max_examples=300, deadline=None)
@given(documents)
def test_a_create_is_the_clients_create(data):
    assert document_write(NAME, data, STAMP)._pb == theirs_create(data)


@settings(max_examples=300, deadline=None)
@given(documents, st.datetimes(timezones=st.just(dt.timezone.utc)))
def test_an_update_is_the_clients_update(data, when):
    ours = document_write(NAME, data, STAMP, update_time=when)._pb
    assert ours == theirs_update(data, _helpers._datetime_to_pb_timestamp(when))


def test_rows_of_every_field_type_encode_as_the_client_does():
    row = {
        "id": "0f6e",
        "title": "a note",
        "body": "ü" * 50,
        "pinned": True,
        "createdOn": dt.datetime(2026, 11, 23, 9, 30, 1, 123456),
        "updatedOn": dt.datetime(2026, 11, 23, 9, 30, 1),
        "updatedBy": "device",
        "syncVersion": None,
    }
    data = {k: v for k, v in to_native(Note, row).items() if k in row}
    assert document_write(NAME, data, STAMP)._pb == theirs_create(data)
    # values the client's encoder handles and this module hands to it
    for rare in (firestore.GeoPoint(1.5, 2.5), frozenset({1}), (1, "two")):
        assert value_pb(rare) == _helpers.encode_value(rare)._pb


@pytest.mark.parametrize("value", [float("inf"), -0.0, 2**63 - 1, -(2**63), "", b""])
def test_edge_values(value):
    assert value_pb(value) == _helpers.encode_value(value)._pb
    assert not (isinstance(value, float) and math.isnan(value))
