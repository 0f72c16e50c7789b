"""Errors say what happened and what to do, and keep their cause."""

from __future__ import annotations

from replicator import OfflineError, RemoteDataError, ReplicatorError


def test_errors_say_what_to_do_and_keep_the_cause():
    cause = OSError("boom")
    err = OfflineError("cannot reach", orig=cause)
    assert isinstance(err, ReplicatorError) and err.retryable and err.orig is cause
    assert "sync again" in str(err)
    assert not RemoteDataError("c", "i", "bad").retryable
