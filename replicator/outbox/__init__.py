"""The typed event outbox: events saved locally, delivered in batches by type.

The public names are here: :class:`Outbox` (the facade, in ``outbox``), the
configuration values (``config``), what an outbox tells (:class:`OutboxReport`,
:class:`TypeStatus`, :class:`DeadLetter`) and the merge function
:func:`per_key_max`. The modules behind them, one concern each: ``config``
(configurations and :class:`Retry`), ``setup`` (configurations, sinks and merge
functions in use), ``schema`` (the tables), ``store`` (the SQLite file),
``status`` (what the file tells), ``queue`` (saving, coalescing, the caps),
``messages`` (building and acknowledging messages), ``delivery`` (messages
through a sink) and ``worker`` (the background threads).
"""

from .config import Api, AutoSync, Retry, SyncConfiguration, load_configurations
from .delivery import OutboxReport
from .outbox import Outbox
from .setup import Merge, per_key_max
from .status import DeadLetter, TypeStatus

__all__ = [
    "Api",
    "AutoSync",
    "DeadLetter",
    "Merge",
    "Outbox",
    "OutboxReport",
    "Retry",
    "SyncConfiguration",
    "TypeStatus",
    "load_configurations",
    "per_key_max",
]
