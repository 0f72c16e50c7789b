"""Encrypted snapshots of the synced tables (the Big Brother rule).

``crypto`` seals and opens the stream; ``manifest`` names the latest snapshot
and what it covers, authenticates it, and resolves the key; ``files`` keeps the
temporary files beside the database (and the plaintext copy); ``write`` seals,
uploads and swaps the manifest; ``publish`` is the sync's snapshot phase,
deciding under the strategy whether to write one; ``fetch`` downloads and
verifies one; and ``restore`` installs one on a new device.

Nothing here runs another phase of the sync: the engine runs the catch-up
download and the registration the snapshot phase needs between its steps.
"""
