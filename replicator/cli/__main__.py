"""``python -m replicator.cli``: the ``replicator`` command."""

from . import main

if __name__ == "__main__":
    main()
