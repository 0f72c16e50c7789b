"""A row too large for one remote document is rejected clearly, stays dirty, blocks nothing."""

from __future__ import annotations

from replicator import DocumentTooLargeError, EmbeddedRemote
from tests.models import Comment, Note


def test_oversized_row_is_reported_and_kept(make_device, tmp_path):
    small = EmbeddedRemote(tmp_path / "small.db", max_document_bytes=2000)
    a = make_device("a", store=small)
    with a.bound():
        big = Note.create(title="big", body="x" * 5000)
        Comment.create(note=big, text="child of a row that cannot go up yet")
        ok = Note.create(title="fits")
    report = a.sync()
    assert report.uploaded == {"note": 1}
    errors = {r.id: r.error for r in report.rejected}
    assert isinstance(errors[big.id], DocumentTooLargeError)
    assert "over the store's limit" in str(errors[big.id])
    assert len(errors) == 2  # the child waits for its parent instead of orphaning it
    assert set(small.all_docs("note")) == {ok.id}
    assert small.all_docs("comment") == {}
    with a.bound():
        assert Note.get_by_id(big.id).is_dirty
        Note.update(body="short now").where(Note.id == big.id).execute()
    report = a.sync()
    assert report.rejected == ()
    assert report.uploaded == {"note": 1, "comment": 1}
