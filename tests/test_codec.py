"""The codec: JSON round trips and the checks a remote value must pass to be kept."""

from __future__ import annotations

import peewee
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator import RemoteDataError
from replicator.codec import check_value, decode_json, encode_json


@given(
    st.dictionaries(
        st.text(min_size=1),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text()
        | st.binary(),
    )
)
def test_json_codec_round_trips(data):
    assert decode_json(encode_json(data)) == data


def test_check_value_accepts_and_rejects():
    text, num, blob = peewee.TextField(), peewee.IntegerField(null=True), peewee.BlobField()
    for f, name in ((text, "title"), (num, "n"), (blob, "b")):
        f.column_name = name
    assert check_value("c", "i", text, "x") == "x"
    assert check_value("c", "i", num, None) is None
    assert check_value("c", "i", num, True) == 1
    assert check_value("c", "i", blob, b"\x00") == b"\x00"
    with pytest.raises(RemoteDataError, match="c/i"):
        check_value("c", "i", num, "seven")
    with pytest.raises(RemoteDataError, match="title is null"):
        check_value("c", "i", text, None)
