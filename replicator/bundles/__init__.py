"""Upload-only collections sent as checksummed bundles: ``send`` is the device's
step of a sync, ``ingest`` the service that verifies and applies them."""
