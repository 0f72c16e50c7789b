"""Registration: this device's record in the Devices collection.

The record names the device and carries its watermarks (what it has
downloaded) and the generation of the last snapshot it published: Big
Brother compares watermarks across devices, and a restore refuses a manifest
rolled back behind a published generation. The store stamps the write with
its own time, from which the device learns how far its clock is off.
"""

from __future__ import annotations

from .context import SyncContext


def register(ctx: SyncContext) -> None:
    """Write the device record, and measure the clock against the store's stamp."""
    ctx.progress("register", None, 0, 1)
    before = ctx.clock()
    ctx.measured_clock(before, ctx.remote.register(ctx.device_record()))
    ctx.local.set_device(registered=1)
    ctx.progress("register", None, 1, 1)
