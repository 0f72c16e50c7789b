"""The typed event outbox: events saved locally, delivered in batches by type
(``outbox``), on a background thread when a type asks for automatic syncs
(``worker``)."""
