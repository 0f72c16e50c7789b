"""What :meth:`Outbox.init` sets up per type: its configuration, the sink its
messages go to, and the function that merges two saves under one key.

Invariants:

* the three are replaced together by :meth:`Setup.replace`; a sink or a merge
  function is given only for a configured type;
* a type without a sink of the app's delivers over HTTP to its ``api``, through an
  :class:`~replicator.stores.http.HttpSink` made on first use and owned (and closed)
  here; an app's sinks are the app's to close;
* a type without a merge function coalesces by replacement: the later save wins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError, EventError
from ..stores.base import Sink
from ..stores.http import HttpSink
from ..strategies.conflict import map_max
from .config import SyncConfiguration

#: ``merge(earlier, later)``: the JSON value two saves under one key become
Merge = Callable[[Any, Any], Any]


def per_key_max(earlier: Any, later: Any) -> Any:
    """A merge for progress maps: each key keeps its highest value (2, completed,
    beats 1, in progress, beats 0), so a coalesced progress event never goes
    backwards. Built on the conflict module's ``map_max``."""
    return map_max(later, earlier, None)


class Setup:
    """The configured types of one outbox, with their sinks and merge functions.
    ``timeout`` is the seconds an HTTP sink made here waits for an answer."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._configs: dict[str, SyncConfiguration] = {}
        self._sinks: dict[str, Sink] = {}
        self._own_sinks: dict[str, Sink] = {}
        self._merge: dict[str, Merge] = {}

    @staticmethod
    def check(
        configs: Mapping[str, SyncConfiguration],
        sinks: Mapping[str, Sink] | None = None,
        merge: Mapping[str, Merge] | None = None,
    ) -> None:
        """Refuse a sink or a merge function given for a type ``configs`` lacks."""
        for type_ in (*(sinks or {}), *(merge or {})):
            if type_ not in configs:
                raise ConfigurationError(f"a sink or merge is given for unknown type {type_!r}")

    def replace(
        self,
        configs: Mapping[str, SyncConfiguration],
        sinks: Mapping[str, Sink] | None = None,
        merge: Mapping[str, Merge] | None = None,
    ) -> None:
        """Put ``configs`` (and the app's ``sinks`` and ``merge`` functions of some
        of those types) in place of the earlier set; the sinks made here close."""
        self.check(configs, sinks, merge)
        self.close()
        self._configs = dict(configs)
        self._sinks = dict(sinks or {})
        self._merge = dict(merge or {})

    @property
    def configurations(self) -> dict[str, SyncConfiguration]:
        """A copy of the configurations, by type."""
        return dict(self._configs)

    def get(self, type_: str) -> SyncConfiguration | None:
        return self._configs.get(type_)

    def config(self, type_: str) -> SyncConfiguration:
        """The configuration of ``type_``; an :class:`EventError` naming the
        configured types when there is none."""
        config = self._configs.get(type_)
        if config is None:
            known = ", ".join(sorted(self._configs)) or "none"
            raise EventError(
                f"no configuration for type {type_!r} (configured: {known})",
                hint="call outbox.init(configurations) with this type first",
            )
        return config

    def sink(self, type_: str) -> Sink:
        """Where the messages of ``type_`` go: the app's sink, or HTTP to its api."""
        sink = self._sinks.get(type_) or self._own_sinks.get(type_)
        if sink is None:
            api = self.config(type_).api
            sink = self._own_sinks[type_] = HttpSink(api.method, api.url, timeout=self.timeout)
        return sink

    def merge(self, type_: str) -> Merge | None:
        return self._merge.get(type_)

    def close(self) -> None:
        """Close the sinks made here (not the app's)."""
        for sink in self._own_sinks.values():
            sink.close()
        self._own_sinks = {}
