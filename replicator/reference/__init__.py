"""Download-only reference data and the reference files cached beside it."""
