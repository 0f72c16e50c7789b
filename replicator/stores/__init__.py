"""Remote and blob stores, each behind a protocol of ``stores.base``."""

from .base import DeviceRecord, Page, PushResult, RemoteDoc, RemoteStore, Usage, Write
from .embedded import EmbeddedRemote

__all__ = [
    "DeviceRecord",
    "EmbeddedRemote",
    "Page",
    "PushResult",
    "RemoteDoc",
    "RemoteStore",
    "Usage",
    "Write",
]
