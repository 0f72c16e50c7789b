"""A field-campaign device and its ingest service, from config files: ``replicator
sync`` bundles, ``replicator ingest`` (in-process with --once, and as a real process
serving HTTP) verifies and applies."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from replicator.cli import main
from replicator.cli.config import DeviceConfig
from replicator.testing import free_port
from tests.helpers import TESTS

MODELS = (TESTS / "campaign_models.py").read_text()


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def place(tmp_path):
    (tmp_path / "campaign.py").write_text(MODELS)
    service = tmp_path / "service.toml"
    service.write_text(
        'models = "campaign:MODELS"\n[remote]\nembedded = "remote.db"\n'
        '[bundles]\ncollections = ["households"]\ningest_queue = true\ndirectory = "bucket"\n'
    )
    return tmp_path


def collector(place: Path, ingest: str) -> Path:
    path = place / "collector.toml"
    path.write_text(
        'database = "collector.db"\nmodels = "campaign:MODELS"\ndevice_name = "collector"\n'
        'download_only = ["form_schemas", "localizations"]\n'
        '[remote]\nembedded = "remote.db"\n'
        f'[bundles]\ncollections = ["households"]\n{ingest}\ndirectory = "bucket"\n'
    )
    return path


def register(config: Path, n: int) -> None:
    device = DeviceConfig.load(config).replicator()
    households = next(m for m in device.models if m._meta.table_name == "households")
    with device.bound():
        for i in range(n):
            households.create(head=f"head {i}")
    device.database.close()


def test_queue_mode_sync_then_ingest_once_then_sync(place):
    config = collector(place, "ingest_queue = true")
    register(config, 3)
    result = run("sync", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "1 bundle awaiting the service" in result.output
    status = run("status", str(place / "collector.db"))
    assert "bundles awaiting the ingest service: 1" in status.output, status.output
    result = run("ingest", "--config", str(place / "service.toml"), "--once")
    assert result.exit_code == 0, result.output
    assert "accepted  3 rows" in result.output and "1 bundle(s) decided" in result.output
    result = run("sync", "--config", str(config))
    assert result.exit_code == 0 and "bundled 3 households;" in result.output, result.output


def installation_id(config: Path) -> str:
    device = DeviceConfig.load(config).replicator()
    device.database.close()
    return device.installation_id


def serve(place: Path, port: int, *options: str) -> subprocess.Popen[str]:
    """``replicator ingest --serve`` as a real process, once it answers."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from replicator.cli import main; main()",
            "ingest",
            "--config",
            str(place / "service.toml"),
            "--serve",
            f"127.0.0.1:{port}",
            "--poll",
            "0.2",
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=place,
    )
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.1)
    raise AssertionError("the service never answered")


def with_tokens(place: Path, tokens: dict[str, str]) -> None:
    """The service's config names a file of the devices' tokens."""
    (place / "tokens.toml").write_text("".join(f'"{d}" = "{t}"\n' for d, t in tokens.items()))
    service = place / "service.toml"
    service.write_text(service.read_text() + '[service]\ndevice_tokens = "tokens.toml"\n')


def test_ingest_serves_http_as_a_real_process_and_stops_on_sigterm(place, monkeypatch):
    port = free_port()
    url = f"http://127.0.0.1:{port}/ingest"
    config = collector(place, f'ingest_url = "{url}"')
    register(config, 4)
    with_tokens(place, {installation_id(config): "collector-token-0123456789"})
    monkeypatch.setenv("INGEST_TOKEN_T", "collector-token-0123456789")
    proc = serve(place, port)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        # a request without the token is refused
        assert httpx.post(url, json={}, timeout=5).status_code == 401
        token = {"Authorization": "Bearer collector-token-0123456789"}
        bad = httpx.post(url, json={"bundle": 1}, headers=token)
        assert bad.status_code == 400 and "malformed ingest request" in bad.json()["error"]
        result = run("sync", "--config", str(config))
        assert result.exit_code == 1 and "HTTP 401" in result.output  # told, in one line
        config.write_text(
            config.read_text().replace(
                "[bundles]", '[bundles]\ningest_token_env = "INGEST_TOKEN_T"'
            )
        )
        result = run("sync", "--config", str(config))
        assert result.exit_code == 0 and "bundled 4 households;" in result.output, result.output
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, out
    assert "taking ingest requests at" in out
    # a line for each decision: the refusals and the bundle accepted
    assert "HTTP 401: missing or wrong bearer token" in out, out
    assert "HTTP 400: malformed ingest request" in out, out
    assert "of households from" in out and "accepted (4 rows accepted, 0 refused)" in out, out


def test_serving_without_the_devices_tokens_is_refused_in_one_line(place):
    result = run(
        "ingest", "--config", str(place / "service.toml"), "--serve", f"127.0.0.1:{free_port()}"
    )
    assert result.exit_code == 1 and "device_tokens" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_the_ingestor_applies_what_http_devices_send(place):
    from replicator import Bundles, HttpIngest, Ingestor

    config = DeviceConfig.load(place / "service.toml", service=True)
    ingestor = Ingestor(
        config.bundle_blobs(),
        config.open_remote(),
        config.ingest_collections(config.load_models()),
    )
    with ingestor.serve() as server:
        device_config = collector(place, f'ingest_url = "{server.url}"')
        register(device_config, 5)
        result = run("sync", "--config", str(device_config))
        assert result.exit_code == 0 and "bundled 5 households;" in result.output, result.output
    assert isinstance(DeviceConfig.load(device_config).replicator().bundles, Bundles)
    assert isinstance(DeviceConfig.load(device_config).replicator().bundles.service, HttpIngest)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('models = "campaign:MODELS"\n[remote]\nembedded = "r.db"\n', "bundles' bucket"),
        (
            'models = "campaign:MODELS"\n[remote]\nembedded = "r.db"\n'
            '[bundles]\ncollections = ["nope"]\ningest_queue = true\ndirectory = "b"\n',
            "not tables",
        ),
        (
            'models = "campaign:MODELS"\n[remote]\nembedded = "r.db"\n'
            '[bundles]\ncollections = "households"\ningest_queue = true\ndirectory = "b"\n',
            "list of table names",
        ),
        (
            'models = "campaign:MODELS"\n[remote]\nembedded = "r.db"\n'
            '[bundles]\ncollections = ["households"]\ndirectory = "b"\n',
            "exactly one of ingest_url",
        ),
    ],
)
def test_a_wrong_service_or_campaign_config_is_one_line(place, text, says):
    path = place / "bad.toml"
    path.write_text(text)
    device_text = 'database = "d.db"\n' + text
    device = place / "bad_device.toml"
    device.write_text(device_text)
    for args in (["ingest", "--config", str(path), "--once"], ["sync", "--config", str(device)]):
        result = run(*args)
        if (says, args[0]) == ("bundles' bucket", "sync"):  # a device without bundles is fine
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and says in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_bad_serve_address_is_one_line(place):
    result = run("ingest", "--config", str(place / "service.toml"), "--serve", "nowhere")
    assert result.exit_code == 2 and "HOST:PORT" in result.output


@pytest.mark.parametrize("collection", ["form_schemas", "localizations"])
def test_ingest_takes_only_the_collections_its_config_lists(place, collection):
    """A collector's bundle for a download-only collection (the SOS contact's phone),
    or for any collection the service's [bundles] does not list, is rejected."""
    import hashlib
    import io

    from replicator import (
        DeviceRecord,
        DirectoryBlobStore,
        EmbeddedRemote,
        IngestRequest,
        StoreIngest,
    )
    from tests.bundles.kit import WHEN, bundle_bytes

    hostile = {"id": "00000000-0000-4000-8000-000000000001", "form": "sos", "version": 9,
               "schema": "+258 the attacker's phone", "language": "pt", "strings": "{}",
               "updatedOn": WHEN}  # fmt: skip
    data = bundle_bytes([hostile], bundle="b1", device="attacker", collection=collection)
    DirectoryBlobStore(place / "bucket").put("bundles/attacker/b1", io.BytesIO(data))
    request = IngestRequest(
        "b1", "bundles/attacker/b1", hashlib.sha256(data).hexdigest(), len(data), 1,
        collection, "attacker",
    )  # fmt: skip
    remote = EmbeddedRemote(place / "remote.db")
    StoreIngest(remote).submit(request, DeviceRecord("attacker"))
    result = run("ingest", "--config", str(place / "service.toml"), "--once")
    assert result.exit_code == 0, result.output
    assert "rejected" in result.output and "not a collection this service takes" in result.output
    assert remote.all_docs(collection) == {}


@pytest.mark.parametrize(
    ("tokens", "says"),
    [
        ('"collector-1" = "short"\n', "at least 16"),
        ("not toml =", "not valid TOML"),
        ("", "lists no"),
    ],
)
def test_a_wrong_device_tokens_file_is_one_line(place, tokens, says):
    with_tokens(place, {})
    (place / "tokens.toml").write_text(tokens)
    result = run(
        "ingest", "--config", str(place / "service.toml"), "--serve", f"127.0.0.1:{free_port()}"
    )
    assert result.exit_code == 1 and says in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_serving_signed_in_devices_puts_each_users_rows_in_their_root(place, auth_emulator):
    """``--firebase-project``: the Auth emulator's users, as a real process; the
    operators' token works beside it."""
    import hashlib
    import io

    from replicator import DirectoryBlobStore, EmbeddedRemote, FirebaseAuth, IngestRequest
    from replicator.auth import MemoryTokenStore
    from tests.bundles.kit import bundle_bytes, row

    auth_emulator.reset()
    auth = FirebaseAuth(emulator_host=auth_emulator.host, store=MemoryTokenStore())
    ada = auth.sign_up(f"ada-{time.time_ns()}@example.org", "correct horse battery")
    data = bundle_bytes([row(1, head="Ada's")], bundle="b1", device="ada-phone")
    key = "bundles/ada-phone/b1.ndjson.gz"
    DirectoryBlobStore(place / "bucket" / "users" / ada.uid).put(key, io.BytesIO(data))
    request = IngestRequest("b1", key, hashlib.sha256(data).hexdigest(), len(data), 1,
                            "households", "ada-phone")  # fmt: skip
    with_tokens(place, {"operator-1": "operator-token-0123456789"})
    port = free_port()
    url = f"http://127.0.0.1:{port}/ingest"
    proc = serve(place, port, "--firebase-project", auth_emulator.project)
    try:
        headers = {"Authorization": f"Bearer {ada.id_token()}", "X-Replicator-Device": "p"}
        refused = httpx.post(url, json=request.to_json(), headers=headers, timeout=10)
        assert refused.status_code == 403  # the request names ada-phone
        headers["X-Replicator-Device"] = "ada-phone"
        answer = httpx.post(url, json=request.to_json(), headers=headers, timeout=10)
        assert answer.status_code == 200 and answer.json()["state"] == "accepted", answer.text
        operator = {"Authorization": "Bearer operator-token-0123456789"}
        assert httpx.post(url, json={}, headers=operator, timeout=10).status_code == 400
        forged = {"Authorization": "Bearer nope", "X-Replicator-Device": "ada-phone"}
        answer = httpx.post(url, json=request.to_json(), headers=forged, timeout=10)
        assert answer.status_code == 401 and "not an ID token" in answer.json()["error"]
    finally:
        auth.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, out
    assert "unsigned ID tokens" in out
    root = EmbeddedRemote(place / "remote-users" / f"{ada.uid}.db")
    assert [d.data["head"] for d in root.all_docs("households").values()] == ["Ada's"]
    assert EmbeddedRemote(place / "remote.db").all_docs("households") == {}


def test_who_may_call_is_said_on_the_command_line_or_refused_in_one_line(place):
    result = run("ingest", "--config", str(place / "service.toml"), "--firebase-project", "p")
    assert result.exit_code == 2 and "add --serve" in result.output, result.output
    result = run(
        "ingest", "--config", str(place / "service.toml"), "--serve", f"127.0.0.1:{free_port()}"
    )
    assert result.exit_code == 1 and "--firebase-project" in result.output, result.output


def test_the_service_grants_storage_so_a_device_sends_bundles_without_bucket_keys(
    place, seaweed, monkeypatch
):
    """``--grant-storage``: the service, as a real process on SeaweedFS, signs a
    signed-in device's requests under its user's folder; the device puts a bundle with
    no bucket key and the service ingests it into that user's root; another user's
    folder is out of reach."""
    import hashlib
    import io

    from replicator import EmbeddedRemote, HttpIngest, IngestRequest
    from replicator.errors import BlobNotFoundError
    from replicator.stores.granted import GrantedBlobStore
    from replicator.testing import ADMIN, MockIdTokens
    from tests.bundles.kit import bundle_bytes, row

    bucket = "grants" + str(time.time_ns())
    seaweed.client().create_bucket(Bucket=bucket)
    (place / "service.toml").write_text(
        'models = "campaign:MODELS"\n[remote]\nembedded = "remote.db"\n'
        f'[bundles]\ncollections = ["households"]\ningest_queue = true\ns3 = "{bucket}/field"\n'
        f'endpoint_url = "{seaweed.endpoint}"\n'
    )
    for name, value in (
        ("AWS_ACCESS_KEY_ID", ADMIN.access_key),  # the service's keys: only it has any
        ("AWS_SECRET_ACCESS_KEY", ADMIN.secret_key),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9"),  # unsigned test tokens
    ):
        monkeypatch.setenv(name, value)
    port = free_port()
    proc = serve(place, port, "--firebase-project", "demo-grants", "--no-account-check",
                 "--grant-storage")  # fmt: skip
    ada = MockIdTokens("ada", "demo-grants")
    url = f"http://127.0.0.1:{port}"
    try:
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(variable)  # the device holds no bucket key at all
        device = GrantedBlobStore(url, ada)
        data = bundle_bytes([row(1, head="Ada's")], bundle="b1", device="ada-phone")
        key = "bundles/ada-phone/b1.ndjson.gz"
        device.put(key, io.BytesIO(data), sha256=hashlib.sha256(data).hexdigest())
        with pytest.raises(BlobNotFoundError):  # bob's folder is not ada's to read
            GrantedBlobStore(url, MockIdTokens("bob", "demo-grants")).get(key, io.BytesIO())
        request = IngestRequest("b1", key, hashlib.sha256(data).hexdigest(), len(data), 1,
                                "households", "ada-phone")  # fmt: skip
        result = HttpIngest(f"{url}/ingest", tokens=ada).submit(request)
        assert result.state == "accepted", result
        device.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, out
    objects = seaweed.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in objects] == [f"field/users/ada/{key}"]
    root = EmbeddedRemote(place / "remote-users" / "ada.db")
    assert [d.data["head"] for d in root.all_docs("households").values()] == ["Ada's"]


def test_granting_storage_needs_signed_in_devices_and_an_s3_bucket(place):
    result = run("ingest", "--config", str(place / "service.toml"), "--grant-storage")
    assert result.exit_code == 2 and "--firebase-project" in result.output, result.output
