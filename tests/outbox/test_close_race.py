"""Closing an outbox while another thread is inside a statement on it: the process
must not crash (a connection closed under a running statement is freed memory) and
the other thread gets a clear error, not a raw one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

# An app thread saves in a tight loop; the main thread closes the outbox under it.
RACE = textwrap.dedent(
    """
    import pathlib, sys, tempfile, threading
    from replicator import ConfigurationError, Outbox

    folder = pathlib.Path(tempfile.mkdtemp())
    raw = {"type": "T", "api": {"method": "post", "host": "http://127.0.0.1:9",
           "path": "e", "params": ""}}
    wrong = []
    for n in range(int(sys.argv[1])):
        box = Outbox(folder / f"events{n}.db", timeout=1)
        box.init([raw])
        started = threading.Event()

        def saver():
            started.set()
            while True:
                try:
                    box.save("T", {"n": 1})
                except ConfigurationError:
                    return  # the outbox is closed: what the app is told
                except Exception as exc:  # anything else is a finding
                    wrong.append(repr(exc))
                    return

        thread = threading.Thread(target=saver)
        thread.start()
        started.wait()
        box.close()
        thread.join()
    print("wrong:", wrong[:3])
    sys.exit(1 if wrong else 0)
    """
)


def test_closing_while_another_thread_saves_neither_crashes_nor_raises_raw_errors(tmp_path):
    rounds = os.environ.get("REPLICATOR_CLOSE_RACE_ROUNDS", "150")
    run = subprocess.run(
        [sys.executable, "-c", RACE, rounds], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
