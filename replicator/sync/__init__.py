"""The phases of one sync, each a module the engine calls in turn: ``download``
(which hands each remote document to ``apply``, and each page to ``page``),
``upload``, ``register`` and ``retention``; ``upgrade`` fills new columns,
``listeners`` tells the app what a committed step changed, and ``context``
is what a sync carries from one phase to the next."""
