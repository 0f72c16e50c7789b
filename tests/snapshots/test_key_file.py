"""``SnapshotKey.from_file`` reads the key ``replicator key generate`` writes, so an app
and the command line open the same snapshots; a file that holds no key says so."""

from __future__ import annotations

import peewee
import pytest
from click.testing import CliRunner

from replicator import (
    ConfigurationError,
    DirectoryBlobStore,
    EmbeddedRemote,
    Replicator,
    SnapshotKey,
)
from replicator.cli import main
from tests.models import MODELS, Note


def test_a_key_the_cli_generated_opens_what_the_app_published(tmp_path):
    key_file = tmp_path / "key.hex"
    assert CliRunner().invoke(main, ["key", "generate", str(key_file)]).exit_code == 0
    key = SnapshotKey.from_file(key_file)
    assert key.raw == bytes.fromhex(key_file.read_text())
    blobs = tmp_path / "blobs"
    phone = Replicator(
        peewee.SqliteDatabase(str(tmp_path / "phone.db")),
        MODELS,
        EmbeddedRemote(tmp_path / "remote.db"),
        DirectoryBlobStore(blobs),
        key,
    )
    with phone.bound():
        Note.create(title="sealed with the generated key")
    assert phone.sync().snapshot is not None
    verify = CliRunner().invoke(
        main, ["snapshot", "verify", "--blobs", str(blobs), "--key-file", str(key_file)]
    )
    assert verify.exit_code == 0 and "is intact: 0 comment, 1 note" in verify.output


def test_a_raw_32_byte_file_reads_byte_for_byte(tmp_path):
    raw = b"\n" + bytes(range(30)) + b" "
    (tmp_path / "raw.key").write_bytes(raw)
    assert SnapshotKey.from_file(str(tmp_path / "raw.key")).raw == raw


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: None, "no key file at"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_text("not a key\n"), "neither a 32-byte raw key nor 64 hex digits"),
        (lambda p: p.write_text("ab" * 31 + "zz"), "neither a 32-byte raw key nor 64 hex digits"),
    ],
    ids=["missing", "directory", "text", "bad-hex"],
)
def test_a_file_that_holds_no_key_is_a_configuration_error_with_a_hint(tmp_path, make, says):
    path = tmp_path / "key.hex"
    make(path)
    with pytest.raises(ConfigurationError) as caught:
        SnapshotKey.from_file(path)
    assert says in caught.value.message and str(path) in caught.value.message
    assert "replicator key generate" in caught.value.hint
