"""User A never reaches users/B/, whatever A sends: real SeaweedFS behind the grant
service under uvicorn, devices with ID tokens only (tests/conftest.py ``granted_storage``)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os

import httpx
import pytest

from replicator import AccessDeniedError, AuthError, ConfigurationError
from replicator.stores.grant_ops import Op, Signed
from replicator.stores.granted import GrantedBlobStore
from replicator.testing import mock_id_token
from replicator.testing.grants import PROJECT
from tests.grants.test_keys import HOSTILE, LITERAL


def _uid() -> str:
    return "u" + os.urandom(6).hex()


def _bucket(storage) -> dict[str, bytes]:
    """Every object of the bucket and its bytes, as admin sees them."""
    client = storage.seaweed.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=storage.bucket, Key=item["Key"])["Body"].read()
            out[item["Key"]] = body
    return out


def _sign(storage, token: str | None, ops: list[dict]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = json.dumps({"ops": ops})  # (ASCII: a lone surrogate goes as its escape)
    return httpx.post(f"{storage.url}/storage/sign", content=body, headers=headers)


@pytest.fixture
def two_users(granted_storage):
    a, b = _uid(), _uid()
    stores = granted_storage.store(a), granted_storage.store(b)
    stores[1].put("secret", io.BytesIO(b"B's secret"))
    yield granted_storage, a, b, stores[0], stores[1]
    for store in stores:
        store.close()


def test_hostile_keys_are_refused_on_the_device_and_by_the_service(two_users):
    storage, _, _, store, _ = two_users
    before = _bucket(storage)
    token = store.tokens.id_token()
    for key in HOSTILE:
        with pytest.raises(ConfigurationError):
            store.put(key, io.BytesIO(b"x"))
        with pytest.raises(ConfigurationError):
            store.get(key, io.BytesIO())
        for op in ({"op": "get", "key": key}, {"op": "list", "prefix": key + "/"}):
            answer = _sign(storage, token, [{"op": "head", "key": "ok"}, op])
            assert answer.status_code == 400, (key, answer.text)
            assert "ops[1]" in answer.json()["error"]
    assert _bucket(storage) == before


def test_keys_that_look_like_tricks_stay_in_the_users_folder(two_users):
    storage, a, b, store, _ = two_users
    for n, key in enumerate(LITERAL):
        store.put(key, io.BytesIO(f"A {n}".encode()))
    stored = _bucket(storage)
    mine = {k: v for k, v in stored.items() if k.startswith(f"users/{a}/")}
    assert mine == {f"users/{a}/{key}": f"A {n}".encode() for n, key in enumerate(LITERAL)}
    assert stored[f"users/{b}/secret"] == b"B's secret"
    assert not any(k.startswith(f"users/{b}/") and k != f"users/{b}/secret" for k in stored)
    listed = [info.key for info in store.list("")]
    assert listed == sorted(LITERAL)  # the list gives the keys back as they were named
    for n, key in enumerate(LITERAL):
        out = io.BytesIO()
        store.get(key, out)
        assert out.getvalue() == f"A {n}".encode()


def test_a_tampered_url_is_refused_by_s3(two_users):
    storage, a, b, store, _ = two_users
    store.put("mine", io.BytesIO(b"A's"))
    (get,) = store.sign([Op("get", "mine")])
    assert httpx.get(get.url).content == b"A's"
    for url in (
        get.url.replace(f"users/{a}/mine", f"users/{b}/secret"),
        get.url.replace("X-Amz-Expires=900", "X-Amz-Expires=9000"),
        get.url + "&response-content-type=text%2Fhtml",
    ):
        answer = httpx.get(url)
        assert answer.status_code == 403 and b"SignatureDoesNotMatch" in answer.content
    (listing,) = store.sign([Op("list", "")])
    answer = httpx.get(listing.url.replace(f"users%2F{a}%2F", f"users%2F{b}%2F"))
    assert answer.status_code == 403
    (put,) = store.sign([Op("put", "secret", sha256="0" * 64, if_none_match=True)])
    for drop in ("If-None-Match", "x-amz-meta-sha256"):
        headers = {k: v for k, v in put.headers.items() if k != drop}
        answer = httpx.put(put.url, content=b"x", headers=headers)
        assert answer.status_code == 403, drop
    right = hashlib.sha256(b"right").hexdigest()
    (checked,) = store.sign([Op("put", "checked", sha256=right)])
    answer = httpx.put(checked.url, content=b"wrong", headers=dict(checked.headers))
    assert answer.status_code == 400 and b"BadDigest" in answer.content  # the checksum holds
    assert store.head("checked") is None
    tampered = Signed("PUT", put.url.replace(f"users/{a}/", f"users/{b}/"), put.headers)
    assert httpx.put(tampered.url, content=b"x", headers=dict(tampered.headers)).status_code == 403
    assert _bucket(storage)[f"users/{b}/secret"] == b"B's secret"


def test_each_token_reaches_its_own_users_folder_only(two_users):
    _, _, _, store_a, store_b = two_users
    store_a.put("secret", io.BytesIO(b"A's secret"))
    out = io.BytesIO()
    store_a.get("secret", out)
    assert out.getvalue() == b"A's secret"
    assert [i.key for i in store_b.list("")] == ["secret"]
    out = io.BytesIO()
    store_b.get("secret", out)
    assert out.getvalue() == b"B's secret"
    store_a.delete("secret")
    assert store_b.head("secret") is not None


def test_no_token_a_wrong_one_or_an_expired_one_is_401(granted_storage):
    ops = [{"op": "get", "key": "secret"}]
    for token in (
        None,
        "not-a-jwt",
        mock_id_token("A", "another-project"),
        mock_id_token("A", PROJECT, lifetime=-120),
        mock_id_token("A/../B", PROJECT),
    ):
        answer = _sign(granted_storage, token, ops)
        assert answer.status_code == 401, token
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    # a user id that could not name a folder is refused even when its token is valid:
    # the verifier names no one for it (401); the signer would refuse it too (403)
    assert _sign(granted_storage, mock_id_token("..", PROJECT), ops).status_code == 401


class _Tokens:
    """An IdTokens source handing ``first``, then ``refreshed`` once forced."""

    def __init__(self, first: str, refreshed: str) -> None:
        self.uid, self.first, self.refreshed, self.forced = "A", first, refreshed, 0

    def id_token(self) -> str:
        return self.first if not self.forced else self.refreshed

    def refresh_id_token(self) -> str:
        self.forced += 1
        return self.refreshed


def test_an_expired_id_token_is_refreshed_once_then_auth_error(granted_storage):
    expired, fresh = mock_id_token("A", PROJECT, lifetime=-120), mock_id_token("A", PROJECT)
    tokens = _Tokens(expired, fresh)
    store = GrantedBlobStore(granted_storage.url, tokens)
    assert store.head("nothing") is None and tokens.forced == 1
    stuck = _Tokens(expired, expired)
    store = GrantedBlobStore(granted_storage.url, stuck)
    with pytest.raises(AuthError) as caught:
        store.head("nothing")
    assert stuck.forced == 1 and not caught.value.retryable


def test_a_shared_space_is_read_only(granted_storage, caplog):
    admin = granted_storage.seaweed.client()
    admin.put_object(
        Bucket=granted_storage.bucket,
        Key="reference/north/manifest.json",
        Body=b"{}",
        Metadata={"sha256": "0" * 64},
    )
    uid = _uid()
    shared = granted_storage.store(uid, space="reference")
    assert [i.key for i in shared.list("north/")] == ["north/manifest.json"]
    out = io.BytesIO()
    shared.get("north/manifest.json", out)
    assert out.getvalue() == b"{}"
    with pytest.raises(AccessDeniedError):
        shared.put("north/manifest.json", io.BytesIO(b"mine"))
    with pytest.raises(AccessDeniedError):
        shared.delete("north/manifest.json")
    token = shared.tokens.id_token()
    sha = "0" * 64
    for op in (
        {"op": "put", "key": "north/manifest.json", "sha256": sha, "space": "reference"},
        {"op": "delete", "key": "north/manifest.json", "space": "reference"},
    ):
        with caplog.at_level(logging.INFO, logger="replicator.grants"):
            assert _sign(granted_storage, token, [op]).status_code == 403
    assert (
        _sign(granted_storage, token, [{"op": "get", "key": "x", "space": "users"}]).status_code
        == 400
    )
    assert any("read-only" in r.getMessage() and uid in r.getMessage() for r in caplog.records)


def test_what_s3_denies_is_access_denied_and_not_retryable(granted_storage):
    from replicator.grants import Signer

    # a service signing for a folder its own S3 identity has no rights on
    signer = Signer(granted_storage.service_client, granted_storage.bucket, root="private")
    with granted_storage.serve(signer) as server:
        store = GrantedBlobStore(server.base_url, granted_storage.tokens(_uid()))
        calls = {
            "put": lambda: store.put("x", io.BytesIO(b"x")),
            "get": lambda: store.get("x", io.BytesIO()),
            "open": lambda: store.open("x"),
            "head": lambda: store.head("x"),
            "list": lambda: store.list(""),
            "delete": lambda: store.delete("x"),
        }
        for name, call in calls.items():
            with pytest.raises(AccessDeniedError) as caught:
                call()
            assert not caught.value.retryable, name
        store.close()


def test_one_log_line_per_grant_decision(granted_storage, caplog):
    uid = _uid()
    store = granted_storage.store(uid)
    with caplog.at_level(logging.INFO, logger="replicator.grants"):
        store.sign([Op("head", f"k{n}") for n in range(10)])
        _sign(granted_storage, None, [{"op": "head", "key": "k"}])
        _sign(granted_storage, store.tokens.id_token(), [{"op": "head", "key": "../x"}])
    lines = [r.getMessage() for r in caplog.records if r.name == "replicator.grants"]
    assert len(lines) == 3, lines
    assert (
        lines[0].startswith(f"granted {uid} from 127.0.0.1 head 'k0'") and "(+6 more)" in lines[0]
    )
    assert "refused a grant to ?" in lines[1] and "401" in lines[1]
    assert f"refused a grant to {uid}" in lines[2] and "400" in lines[2]


def test_a_head_then_a_get_of_one_key_cost_one_grant(granted_storage):
    store = granted_storage.store(_uid())
    store.put("k", io.BytesIO(b"v"))
    before = store.grants
    assert store.head("k") is not None
    store.get("k", io.BytesIO())
    assert store.grants - before == 1
    store.close()


def test_too_many_ops_or_too_large_a_body_is_413(granted_storage):
    token = granted_storage.tokens(_uid()).id_token()
    answer = _sign(granted_storage, token, [{"op": "head", "key": "k"}] * 1001)
    assert answer.status_code == 413 and answer.headers["Connection"] == "close"
    headers = {"Authorization": f"Bearer {token}"}
    answer = httpx.post(
        f"{granted_storage.url}/storage/sign", content=b" " * (3 << 20), headers=headers
    )
    assert answer.status_code == 413


def test_malformed_bodies_are_400_and_sign_nothing(granted_storage, caplog):
    token = granted_storage.tokens(_uid()).id_token()
    headers = {"Authorization": f"Bearer {token}"}
    for body in (
        b"",
        b"not json",
        b"[]",
        b'{"ops": []}',
        b'{"ops": {"op": "get"}}',
        b'{"ops": [' * 100_000,
        b'{"ops": [{"op": "get", "key": "a"}, 7]}',
        b"\xff\xfe",
    ):
        answer = httpx.post(f"{granted_storage.url}/storage/sign", content=body, headers=headers)
        assert answer.status_code == 400, body[:40]
        assert "requests" not in answer.json()
