"""Re-dialing a Firestore client's gRPC channel once the network may be back.

While the network is down, gRPC backs off its reconnects (1 s, then 1.6 times
longer after each failure, up to two minutes), and a channel in that backoff
fails every call at once with ``UNAVAILABLE``, even after the network is back:
the first sync after an outage would fail although nothing is wrong. Dropping
the channel is not enough: channels share their connections ("subchannels")
through a process-wide pool keyed by address and options, so a channel built
as the client builds its own gets the same backed-off connection back (and
closing the old one frees it only some time later). :func:`redial` gives the
client a channel with a pool of its own (``grpc.use_local_subchannel_pool``),
whose first call connects at once.

It builds the channel as the client does (same target, credentials and
options: google-cloud-firestore's ``BaseClient._firestore_api_helper``, or the
client's own ``make_channel`` when it has one, as a client acting as a
signed-in user does) and
installs it where the client looks for it on each call, so every query,
batch and reference of that client uses it from then on. The old channel is
not closed: another thread may still be using it (a call in flight, an
``on_snapshot`` listener); it goes with its last user. A client this does
not know (another library version) is left as it is and recovers on gRPC's
own schedule, as before.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.cloud.firestore_v1.services.firestore import FirestoreClient
from google.cloud.firestore_v1.services.firestore.transports.grpc import FirestoreGrpcTransport

log = logging.getLogger(__name__)

#: the options the client gives its channels (keepalive, no message size limit), and a
#: subchannel pool of the channel's own, so no backed-off connection is shared with it
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.use_local_subchannel_pool", 1),
    # the emulator's refusal of a large batch names every rule it evaluated, in the
    # trailers: past gRPC's default limits the call would end RESOURCE_EXHAUSTED (a
    # retried "transient" failure) instead of PERMISSION_DENIED
    ("grpc.max_metadata_size", 1 << 20),
    ("grpc.absolute_max_metadata_size", 1 << 20),
]


def redial(client: Any) -> bool:
    """Give ``client`` (a ``google.cloud.firestore.Client``) a fresh gRPC channel.

    Returns whether it did: False when the client has not dialed yet (its
    first call dials anyway) or is not one this knows how to re-dial."""
    api = getattr(client, "_firestore_api_internal", None)
    if not isinstance(api, FirestoreClient) or not isinstance(
        api.transport, FirestoreGrpcTransport
    ):
        return False
    try:
        channel = _channel(client)
        transport = FirestoreGrpcTransport(host=client._target, channel=channel)
        fresh = FirestoreClient(transport=transport, client_options=client._client_options)
    except (AttributeError, TypeError, ValueError) as exc:  # a client of another version
        log.warning("cannot re-dial the Firestore client (%s): gRPC reconnects by itself", exc)
        return False
    client._transport = transport
    client._firestore_api_internal = fresh
    return True


def _channel(client: Any) -> grpc.Channel:
    make = getattr(client, "make_channel", None)
    if callable(make):  # a client that builds its own channels (firestore_user.UserClient)
        made: grpc.Channel = make(CHANNEL_OPTIONS)
        return made
    emulator = getattr(client, "_emulator_host", None)
    if emulator is not None:  # insecure, with the token the client sends the emulator
        token = getattr(client._credentials, "id_token", None) or "owner"
        options = [("Authorization", f"Bearer {token}"), *CHANNEL_OPTIONS]
        return grpc.insecure_channel(emulator, options=options)
    channel: grpc.Channel = FirestoreGrpcTransport.create_channel(
        client._target, credentials=client._credentials, options=CHANNEL_OPTIONS
    )
    return channel
