"""Authorization per collection, device and row, attacked as a collector holding a
valid credential does: its own bundle, with a matching checksum, naming what is not
its own. The service takes only its upload-only collections, lets a device write only
rows it created and only from its own folder of the bucket, bounds ``updatedOn`` by
its own clock, and stamps ``updatedBy`` and ``createdOn`` itself."""

from __future__ import annotations

import httpx
import pytest

from replicator import DeviceTokens
from replicator.stores.base import DeviceRecord, Write
from tests.bundles.kit import NOW_TEXT, WHEN, Desk, bundle_bytes, row

FAR_FUTURE = "2999-01-01 00:00:00"
ROW = row(1)["id"]


@pytest.fixture
def desk(tmp_path):
    return Desk(tmp_path)


def test_another_collectors_row_cannot_be_overwritten_and_the_victims_correction_applies(desk):
    assert desk.send([row(1, head="Ana")], device="victim").accepted == 1
    # the attacker names the victim's row, the victim as its writer, and a far-future stamp
    forged = row(1, head="the attacker's", updatedOn=FAR_FUTURE, updatedBy="victim")
    result = desk.send([forged], device="attacker")
    assert result.state == "accepted" and result.accepted == 0
    assert "another device" in result.refused[ROW]
    assert desk.stored()[ROW]["head"] == "Ana"
    # the victim's later correction is applied, not silently dropped
    result = desk.send([row(1, head="Ana Maria", updatedOn="2026-12-01 09:00:00")], device="victim")
    assert result.accepted == 1 and not result.refused
    assert desk.stored()[ROW]["head"] == "Ana Maria"


def test_a_row_the_supervisor_created_is_not_a_collectors_to_overwrite(desk):
    desk.remote.push(  # created by normal sync, not through ingest
        [Write("households", ROW, {**row(1, head="by the supervisor"), "updatedBy": "sup"})],
        DeviceRecord("sup"),
    )
    result = desk.send([row(1, head="collector", updatedOn="2026-12-30 00:00:00")], device="c1")
    assert list(result.refused) == [ROW] and desk.stored()[ROW]["head"] == "by the supervisor"


def test_a_far_future_updated_on_is_clamped_to_the_service_clock(desk):
    result = desk.send([row(1, head="first", updatedOn=FAR_FUTURE)], device="collector-1")
    assert result.accepted == 1
    assert desk.stored()[ROW]["updatedOn"] == NOW_TEXT  # clamped, not refused
    # so the device's next version, stamped by a right clock, wins
    later = row(1, head="second", updatedOn="2027-01-15 08:01:00")
    assert desk.send([later], device="collector-1").accepted == 1
    assert desk.stored()[ROW]["head"] == "second"


def test_a_far_future_stamp_stored_before_the_rule_does_not_win_for_ever(desk):
    desk.remote.push(  # what the service stored before it bounded updatedOn
        [Write("households", ROW, row(1, head="stuck", updatedOn=FAR_FUTURE, updatedBy="c1"))],
        DeviceRecord("old-ingestor"),
    )
    assert desk.send([row(1, head="fixed")], device="c1").accepted == 1
    assert desk.stored()[ROW]["head"] == "fixed"


def test_the_service_stamps_updated_by_and_created_on_itself(desk):
    forged = row(1, updatedBy="supervisor", createdOn="2001-01-01 00:00:00")
    assert desk.send([forged], device="collector-1").accepted == 1
    stored = desk.stored()[ROW]
    assert stored["updatedBy"] == "collector-1"
    assert stored["createdOn"] == NOW_TEXT and stored["createdBy"] == "collector-1"
    # a later version keeps the first createdOn, whatever it says
    later = row(1, head="later", updatedOn="2026-12-24 00:00:00", createdOn="2026-12-24 00:00:00")
    desk.ingestor.clock = lambda: 1_800_000_600.0
    assert desk.send([later], device="collector-1").accepted == 1
    assert desk.stored()[ROW]["createdOn"] == NOW_TEXT


def test_a_row_naming_the_owner_field_is_refused(desk):
    result = desk.send([row(1, createdBy="victim")], device="attacker")
    assert "unknown field 'createdBy'" in result.refused[ROW] and desk.stored() == {}


def test_a_bundle_key_under_another_devices_folder_is_rejected(desk):
    data = bundle_bytes([row(1)], bundle="b-x", device="attacker")
    request = desk.put(data, device="attacker", bundle="b-x", key="bundles/victim/b-x.ndjson.gz")
    result = desk.ingestor.submit(request)
    assert result.state == "rejected" and "folder of the device" in result.reason, result
    assert desk.stored() == {}


@pytest.mark.parametrize("collection", ["form_schemas", "localizations", "payroll"])
def test_only_the_configured_upload_only_collections_are_taken(desk, collection):
    result = desk.send(
        [{"id": ROW, "form": "sos", "version": 1, "schema": "{}", "updatedOn": WHEN}],
        device="attacker",
        collection=collection,
    )
    assert result.state == "rejected" and "not a collection this service takes" in result.reason
    assert desk.stored(collection) == {}


# -- over HTTP: every request tied to the device whose token it carries ---------------------

TOKENS = {"victim": "victim-token-0123456789", "attacker": "attacker-token-0123456789"}


def _post(server, request, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(server.url, json=request.to_json(), headers=headers, timeout=10)


def test_a_device_token_sends_only_that_devices_requests(desk):
    victims = desk.request([row(1)], device="victim")
    with desk.ingestor.serve(auth=DeviceTokens(TOKENS)) as server:
        assert _post(server, victims).status_code == 401
        assert _post(server, victims, "victim-token-0123456788").status_code == 401
        forged = _post(server, victims, TOKENS["attacker"])  # naming the victim
        assert forged.status_code == 403 and "a device sends only its own" in forged.text
        assert desk.stored() == {}
        answer = _post(server, victims, TOKENS["victim"])
        assert answer.status_code == 200 and answer.json()["state"] == "accepted"
    assert desk.stored()[ROW]["updatedBy"] == "victim"


def test_a_token_is_compared_with_every_devices_in_constant_time(monkeypatch):
    from replicator.bundles import auth

    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    tokens = DeviceTokens({f"d{i}": f"token-of-device-{i:04d}" for i in range(50)})
    for given in ("token-of-device-0007", "token-of-device-0049", "nope", ""):
        calls.clear()
        caller = tokens({"authorization": f"Bearer {given}"})
        assert len(calls) == 50  # every token compared, whichever matched (or none)
        assert (caller.device if caller else None) == {
            "token-of-device-0007": "d7",
            "token-of-device-0049": "d49",
        }.get(given)


@pytest.mark.parametrize(
    ("tokens", "says"),
    [
        ({"d1": "short"}, "at least 16"),
        ({"d1": "same-token-0123456789", "d2": "same-token-0123456789"}, "another device's"),
        ({"a/b": "token-of-device-0001"}, "installation id"),
    ],
)
def test_unusable_device_tokens_are_a_configuration_error(tokens, says):
    from replicator import ConfigurationError

    with pytest.raises(ConfigurationError, match=says):
        DeviceTokens(tokens)


def test_an_ingestor_of_something_else_than_models_is_a_configuration_error(tmp_path):
    from replicator import ConfigurationError, DirectoryBlobStore, EmbeddedRemote, Ingestor

    with pytest.raises(ConfigurationError, match="not a SyncModel"):
        Ingestor(DirectoryBlobStore(tmp_path / "b"), EmbeddedRemote(tmp_path / "r"), ["households"])
