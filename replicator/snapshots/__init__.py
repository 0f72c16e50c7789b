"""Encrypted snapshots of the synced tables (the Big Brother rule): ``crypto``
seals and opens the stream, ``manifest`` names the latest snapshot and what it
covers, ``publish`` writes one when this device holds the freshest data, and
``restore`` installs one on a new device."""
