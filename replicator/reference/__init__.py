"""Download-only reference data (:mod:`.data`) and the reference files cached beside it
(:mod:`.files`); this package re-exports their public names."""

from .data import guard_download_only, localizations
from .files import ReferenceFiles

__all__ = ["ReferenceFiles", "guard_download_only", "localizations"]
