"""What an app configures per outbox type, read and checked before anything is stored.

A type's configuration is the JSON an app already has for it: ``type``, ``api``
(``method``, ``host``, ``path``, ``params``), ``autoSync`` (``frequency``,
``threshold``, ``bandwidth``) and ``shouldBatch``. Invariants:

* a :class:`SyncConfiguration` exists only once validated: an unknown key, a wrong
  type, a negative or non-finite number, a method other than POST, PUT or PATCH,
  or host, path and params that make no http(s) URL is a
  :class:`~replicator.errors.ConfigurationError` naming the field;
* a zero or missing ``autoSync`` value switches that trigger (or the cap) off, so
  an :class:`AutoSync` holds only values that are on;
* a type is configured at most once in one set of configurations.

Units of ``autoSync``: ``frequency`` in minutes, ``threshold`` in pending events,
``bandwidth`` in KiB per second of message bytes on the wire. Fractions are fine.

:class:`Retry` (how delivery failures that can pass are retried) is the outbox's
own setting, not part of a type's JSON.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import attrs

from ..errors import ConfigurationError

METHODS = ("POST", "PUT", "PATCH")


def _field(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigurationError(f"{where} must be {what}, got {value!r}")
    return value


@attrs.frozen
class Api:
    """Where a type's messages go: ``method`` (POST, PUT or PATCH, any case) to
    ``host`` + ``path`` with ``params`` as the query. ``host`` is a bare host name
    (https is assumed) or a URL with scheme and port."""

    method: str
    host: str
    path: str = ""
    params: str = ""

    @property
    def url(self) -> str:
        host = self.host if "://" in self.host else f"https://{self.host}"
        url = host.rstrip("/")
        if self.path:
            url += "/" + self.path.lstrip("/")
        if self.params:
            url += "?" + self.params.lstrip("?")
        return url


@attrs.frozen
class AutoSync:
    """When the worker syncs a type by itself: every ``frequency`` minutes, and as
    soon as ``threshold`` events wait; automatic syncs send at most ``bandwidth``
    KiB per second. A zero or missing value switches that trigger (or the cap) off."""

    frequency: float | None = None
    threshold: int | None = None
    bandwidth: float | None = None


@attrs.frozen
class SyncConfiguration:
    """One type's configuration: where its messages go, when the worker sends them
    by itself, and whether its events travel in batches."""

    type: str
    api: Api
    auto_sync: AutoSync | None = None
    should_batch: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], type_name: str | None = None) -> SyncConfiguration:
        """Read the JSON shape (``type``, ``api``, ``autoSync``, ``shouldBatch``);
        ``type_name`` supplies ``type`` when the dict is a value of a
        ``{type: config}`` mapping."""
        where = f"configuration {type_name or raw.get('type', '?')!s}"
        _field(where, raw, Mapping, "an object")
        unknown = set(raw) - {"type", "api", "autoSync", "shouldBatch"}
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown key(s) {sorted(unknown)}",
                hint="a configuration has type, api, autoSync and shouldBatch",
            )
        type_ = raw.get("type", type_name)
        if type_name is not None and type_ != type_name:
            raise ConfigurationError(f"{where}: type {type_!r} under the key {type_name!r}")
        if not isinstance(type_, str) or not type_:
            raise ConfigurationError(f"{where}: type must be a non-empty string, got {type_!r}")
        return cls(
            type=type_,
            api=_api(f"{where}.api", raw.get("api")),
            auto_sync=_auto_sync(where, raw.get("autoSync")),
            should_batch=_field(
                f"{where}.shouldBatch", raw.get("shouldBatch", False), bool, "true or false"
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        auto = self.auto_sync
        return {
            "type": self.type,
            "api": attrs.asdict(self.api),
            "autoSync": None if auto is None else attrs.asdict(auto),
            "shouldBatch": self.should_batch,
        }


def _api(where: str, raw: Any) -> Api:
    api = _field(where, raw, Mapping, "an object")
    unknown = set(api) - {"method", "host", "path", "params"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {sorted(unknown)}")
    method = _field(f"{where}.method", api.get("method"), str, "a string")
    if method.upper() not in METHODS:
        raise ConfigurationError(f"{where}.method must be POST, PUT or PATCH: {method!r}")
    host = _field(f"{where}.host", api.get("host"), str, "a string")
    if not host.strip():
        raise ConfigurationError(f"{where}.host must not be empty")
    path = _field(f"{where}.path", api.get("path", ""), str, "a string")
    params = api.get("params", "")
    if isinstance(params, Mapping):
        params = urlencode({str(k): str(v) for k, v in params.items()})
    params = _field(f"{where}.params", params, str, "a string or an object")
    checked = Api(method.upper(), host.strip(), path, params)
    _check_url(where, checked.url)
    return checked


def _check_url(where: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError as exc:
        raise ConfigurationError(
            f"{where}: host, path and params make no URL ({url!r}): {exc}"
        ) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ConfigurationError(
            f"{where}: host, path and params make no http(s) URL: {url!r}",
            hint="host is a name (https assumed) or http(s)://host[:port]",
        )


def _auto_sync(where: str, raw: Any) -> AutoSync | None:
    if raw is None:
        return None
    _field(f"{where}.autoSync", raw, Mapping, "an object or null")
    unknown = set(raw) - {"frequency", "threshold", "bandwidth"}
    if unknown:
        raise ConfigurationError(f"{where}.autoSync: unknown key(s) {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name in ("frequency", "threshold", "bandwidth"):
        value = raw.get(name)
        if value is None:
            continue
        _field(f"{where}.autoSync.{name}", value, (int, float), "a number")
        if value < 0 or value != value or value == float("inf"):
            raise ConfigurationError(f"{where}.autoSync.{name} must be a finite number >= 0")
        if value:
            values[name] = int(value) if name == "threshold" else float(value)
    return AutoSync(**values)


def load_configurations(
    configurations: Iterable[Mapping[str, Any] | SyncConfiguration]
    | Mapping[str, Mapping[str, Any]],
) -> dict[str, SyncConfiguration]:
    """Configurations as a list (each with ``type``) or as ``{type: config}``."""
    if isinstance(configurations, Mapping):
        items = [SyncConfiguration.from_dict(c, t) for t, c in configurations.items()]
    else:
        items = [
            c if isinstance(c, SyncConfiguration) else SyncConfiguration.from_dict(c)
            for c in configurations
        ]
    out: dict[str, SyncConfiguration] = {}
    for item in items:
        if not item.type.isascii():
            try:
                item.type.encode()
            except UnicodeEncodeError as exc:
                raise ConfigurationError(
                    f"type {item.type!r} is not valid Unicode (a lone surrogate)",
                    hint="name the type with text that was decoded right",
                ) from exc
        if item.type in out:
            raise ConfigurationError(f"type {item.type!r} is configured twice")
        out[item.type] = item
    return out


@attrs.frozen
class Retry:
    """How delivery failures that can pass are retried: waits of ``base`` seconds
    doubling up to ``cap``, each scaled by a random factor in [0.5, 1] (jitter), or
    the receiver's ``Retry-After`` (at most ``cap``). An explicit :meth:`Outbox.sync`
    tries a message ``attempts`` times before it raises; the worker tries once per
    run and waits the backoff before the next run, however many runs it takes. A
    message whose sink fails in a way no wait cures (neither unreachable nor busy)
    is dead-lettered after ``attempts`` such failures."""

    attempts: int = 3
    base: float = 0.5
    cap: float = 300.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.cap, float(retry_after))
        backoff: float = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        return backoff * random.uniform(0.5, 1.0)
