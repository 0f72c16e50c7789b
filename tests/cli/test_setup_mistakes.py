"""A user's own setup mistakes, on the command line: each is one line on stderr that
names the problem (and what to fix), exit status 1, never "unexpected ... report it"
and never a traceback. A database that is not SQLite, a folder or a path in a missing
folder; a models module that raises, does not parse or lists something that is not a
model; a port out of range or in use; an S3 endpoint that is not a URL; S3 or
Firestore without credentials; a device's database given where the remote file
belongs; a config value of the wrong type."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from replicator.cli import main
from tests.helpers import TESTS

CAMPAIGN = (TESTS / "campaign_models.py").read_text()

MODELS = """
import peewee
from replicator import SyncModel

class Task(SyncModel):
    title = peewee.TextField()
"""


def one_line_error(*args: str) -> str:
    """Run the command; it must fail with one line that is not a report-a-bug line."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    text = result.output.strip()
    assert text.startswith("Error: ") and len(text.splitlines()) == 1, text
    assert "Traceback" not in text and "unexpected" not in text, text
    assert "REPLICATOR_DEBUG" not in text, text
    return text


def device_config(place: Path, database: str = "phone.db", attr: str = "") -> Path:
    """A device's config file beside its models module, ``models_file(place)``."""
    (place / "models_name").write_text(f"tasks_{uuid.uuid4().hex}")  # a name of its own:
    # the commands run in this process, which keeps every module it imported
    models_file(place).write_text(MODELS)
    module = models_name(place)
    models = f"{module}:{attr}" if attr else module
    path = place / "phone.toml"
    path.write_text(
        f'database = "{database}"\nmodels = "{models}"\n[remote]\nembedded = "remote.db"\n'
    )
    return path


def models_name(place: Path) -> str:
    return (place / "models_name").read_text()


def models_file(place: Path) -> Path:
    return place / f"{models_name(place)}.py"


# -- the device's database ------------------------------------------------------------------


def test_a_database_that_is_not_sqlite(tmp_path):
    (tmp_path / "phone.db").write_bytes(b"a spreadsheet, not a database " * 100)
    text = one_line_error("sync", "--config", str(device_config(tmp_path)))
    assert "phone.db" in text and "not a SQLite database" in text


def test_a_folder_given_as_the_database(tmp_path):
    (tmp_path / "phone.db").mkdir()
    text = one_line_error("sync", "--config", str(device_config(tmp_path)))
    assert "phone.db is a folder" in text


def test_a_database_in_a_missing_folder(tmp_path):
    config = device_config(tmp_path, database="data/phone.db")
    text = one_line_error("sync", "--config", str(config))
    assert f"the folder {tmp_path / 'data'} does not exist" in text
    assert not (tmp_path / "data").exists()


def test_a_database_that_is_not_a_string_is_not_called_missing(tmp_path):
    config = device_config(tmp_path)
    config.write_text(config.read_text().replace('database = "phone.db"', "database = 5"))
    text = one_line_error("sync", "--config", str(config))
    assert "database" in text and "must be" in text and "required" not in text


# -- the models module --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ('raise RuntimeError("the models need a licence file")', "the models need a licence"),
        ("class Task(SyncModel:\n    pass\n", "SyntaxError"),
        ("import no_such_module_anywhere\n", "no_such_module_anywhere"),
    ],
    ids=["raises", "syntax-error", "imports-a-missing-module"],
)
def test_a_models_module_that_fails_to_import(tmp_path, source, says):
    config = device_config(tmp_path)
    models_file(tmp_path).write_text("from replicator import SyncModel\n" + source)
    text = one_line_error("sync", "--config", str(config))
    assert repr(models_name(tmp_path)) in text and says in text and "failed to import" in text


@pytest.mark.parametrize(
    "listed", ["[Task, 'notes']", "[Task, peewee.Model]", "Task"], ids=["text", "model", "one"]
)
def test_a_models_list_naming_something_that_is_not_a_sync_model(tmp_path, listed):
    config = device_config(tmp_path, attr="MODELS")
    models_file(tmp_path).write_text(MODELS + f"MODELS = {listed}\n")
    text = one_line_error("sync", "--config", str(config))
    assert f"{models_name(tmp_path)}:MODELS" in text and "SyncModel classes" in text


# -- the ingest service's address ------------------------------------------------------------


@pytest.fixture
def service(tmp_path) -> Path:
    (tmp_path / "campaign.py").write_text(CAMPAIGN)
    path = tmp_path / "service.toml"
    path.write_text(
        'models = "campaign:MODELS"\n[remote]\nembedded = "remote.db"\n'
        '[bundles]\ncollections = ["households"]\ningest_queue = true\ndirectory = "bucket"\n'
        '[service]\ndevice_tokens = "tokens.toml"\n'
    )
    (tmp_path / "tokens.toml").write_text('"collector-1" = "collector-1-token-0123"\n')
    return path


@pytest.mark.parametrize("once", [[], ["--once"]], ids=["serving", "once"])
@pytest.mark.parametrize("address", ["127.0.0.1:99999", "127.0.0.1:-1", "nonsense", ":80"])
def test_an_address_out_of_range_or_malformed_is_a_usage_error(service, address, once):
    # a usage error, as click reports every malformed option: status 2, the usage, and
    # one line naming the option and the accepted form
    result = CliRunner().invoke(
        main, ["ingest", "--config", str(service), "--serve", address, *once]
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "--serve" in errors[0] and "0 to 65535" in errors[0], result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output


def test_a_busy_port_names_the_address(service):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = one_line_error("ingest", "--config", str(service), "--serve", f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in text and "in use" in text


def test_an_address_that_is_not_on_this_machine(service):
    # a name that resolves nowhere: refused before anything listens
    text = one_line_error("ingest", "--config", str(service), "--serve", "no-such-host.invalid:80")
    assert "no-such-host.invalid:80" in text


# -- the stores ---------------------------------------------------------------------------------


def test_an_s3_endpoint_that_is_not_a_url(tmp_path):
    (tmp_path / "key").write_bytes(bytes(32))
    text = one_line_error(
        "snapshot", "list", "--s3", "bucket", "--endpoint-url", "notaurl",
        "--key-file", str(tmp_path / "key"),
    )  # fmt: skip
    assert "'notaurl'" in text and "URL" in text


def test_s3_without_credentials(tmp_path, monkeypatch):
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    (tmp_path / "key").write_bytes(bytes(32))
    text = one_line_error(
        "snapshot", "list", "--s3", "bucket", "--endpoint-url", "http://127.0.0.1:9",
        "--key-file", str(tmp_path / "key"),
    )  # fmt: skip
    assert "ConfigurationError" in text and "credentials" in text


def test_firestore_without_credentials(tmp_path, monkeypatch):
    # a credentials file that does not exist: google.auth refuses at once, asking no
    # metadata server
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    text = one_line_error("compact", "--firestore-root", "users/u", "--firestore-project", "p")
    assert "ConfigurationError" in text and "credentials" in text


def test_a_device_database_given_to_compact(tmp_path):
    import peewee

    from replicator import EmbeddedRemote, Replicator
    from tests.models import MODELS as NOTES

    db = peewee.SqliteDatabase(str(tmp_path / "phone.db"))
    Replicator(db, NOTES, EmbeddedRemote(tmp_path / "remote.db"), device_name="phone")
    db.close()
    before = (tmp_path / "phone.db").read_bytes()
    text = one_line_error("compact", "--embedded", str(tmp_path / "phone.db"))
    assert "ConfigurationError" in text and "not an embedded remote" in text
    assert (tmp_path / "phone.db").read_bytes() == before


def test_a_remote_in_a_missing_folder(tmp_path):
    config = device_config(tmp_path)
    config.write_text(config.read_text().replace("remote.db", "share/remote.db"))
    text = one_line_error("sync", "--config", str(config))
    assert "ConfigurationError" in text and "does not exist" in text
