"""What Firebase Authentication can answer besides the emulator's everyday refusals, from
a real HTTP server on 127.0.0.1 playing the token service: throttling, outages, a
provider not enabled, a wrong API key, a server that is not Firebase at all."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from replicator import ConfigurationError, RemoteError, TransientError
from replicator.auth import FirebaseAuth, MemoryTokenStore


def firebase_error(message, code=400):
    return {"error": {"code": code, "message": message, "errors": [{"message": message}]}}


class Canned:
    """An HTTP server that answers every POST with the status, headers and body set."""

    def __init__(self):
        self.status, self.headers, self.body = 200, {}, b"{}"
        self.requests = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                canned.requests.append((self.path, dict(self.headers), self.rfile.read(length)))
                self.send_response(canned.status)
                for name, value in canned.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(canned.body)))
                self.end_headers()
                self.wfile.write(canned.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, status, body, headers=None):
        self.status, self.headers = status, dict(headers or {})
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.fixture
def service():
    canned = Canned()
    yield canned
    canned.server.shutdown()
    canned.server.server_close()


@pytest.fixture
def auth(service):
    auth = FirebaseAuth("test-key", base_url=service.url, store=MemoryTokenStore())
    yield auth
    auth.close()


def test_throttling_is_transient_with_the_delay_asked_for(auth, service):
    service.answer(429, firebase_error("RESOURCE_EXHAUSTED", 429), {"Retry-After": "7"})
    with pytest.raises(TransientError) as caught:
        auth.sign_in_anonymously()
    assert caught.value.retryable and caught.value.retry_after == 7.0
    service.answer(400, firebase_error("TOO_MANY_ATTEMPTS_TRY_LATER : Try again later."))
    with pytest.raises(TransientError, match="TOO_MANY_ATTEMPTS_TRY_LATER"):
        auth.sign_in_with_password("ada@example.com", "correct horse")


def test_an_outage_is_transient(auth, service):
    service.answer(503, b"<html>unavailable</html>")
    with pytest.raises(TransientError, match="HTTP 503"):
        auth.sign_in_anonymously()


@pytest.mark.parametrize(
    ("message", "hint"),
    [
        ("OPERATION_NOT_ALLOWED", "Sign-in method"),
        ("PASSWORD_LOGIN_DISABLED", "Email/Password"),
        ("ADMIN_ONLY_OPERATION", "sign-up"),
        ("API key not valid. Please pass a valid API key.", "Web API key"),
    ],
)
def test_a_project_set_up_wrong_is_a_configuration_error(auth, service, message, hint):
    service.answer(400, firebase_error(message))
    with pytest.raises(ConfigurationError) as caught:
        auth.sign_in_anonymously()
    assert hint in caught.value.hint and not caught.value.retryable


def test_a_server_that_is_not_firebase_is_a_configuration_error(auth, service):
    service.answer(404, b"<html>no such page</html>", {"Content-Type": "text/html"})
    with pytest.raises(ConfigurationError, match="not Firebase Authentication") as caught:
        auth.sign_in_anonymously()
    assert "base URL" in caught.value.hint


def test_an_answer_without_tokens_is_a_remote_error(auth, service):
    service.answer(200, {"kind": "something else"})
    with pytest.raises(RemoteError, match="no idToken"):
        auth.sign_in_anonymously()
    service.answer(200, b"not json")
    with pytest.raises(RemoteError, match="not JSON"):
        auth.sign_in_anonymously()


def test_the_api_key_travels_in_a_header_never_in_the_url(auth, service):
    service.answer(400, firebase_error("EMAIL_NOT_FOUND"))
    with pytest.raises(Exception):  # noqa: B017 - only the request matters here
        auth.sign_in_with_password("ada@example.com", "correct horse")
    path, headers, _ = service.requests[-1]
    assert path == "/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword"
    assert {k.lower(): v for k, v in headers.items()}["x-goog-api-key"] == "test-key"
