"""A user signs in on two devices, the session survives a restart, and sign-out on a
shared laptop removes the user's data: Firebase Authentication's emulator here, a
real project the same way (give FirebaseAuth the project's Web API key).

If FIREBASE_AUTH_EMULATOR_HOST is not set, the script starts the Auth emulator
itself (npm package firebase-tools: the one `.ci/run` installs in .ci/node, the
one REPLICATOR_FIREBASE_CLI names, or `firebase` on PATH). The block between the
docs markers below is the "In development and tests" example of
docs/concepts/sign-in.md, word for word.

Run: .venv/bin/python examples/sign_in.py [DIRECTORY]
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

import peewee

from replicator.testing import AuthEmulator, find_firebase_cli


def main(directory: Path) -> None:
    # docs: begin
    from replicator import AuthError, FirebaseAuth

    # FIREBASE_AUTH_EMULATOR_HOST names the emulator; in production: FirebaseAuth("AIza...")
    laptop = FirebaseAuth(store=directory / "laptop-session.json")
    try:
        session = laptop.sign_up("ada@example.com", "correct horse battery")
    except AuthError as exc:
        if exc.code != "EMAIL_EXISTS":
            raise
        session = laptop.sign_in_with_password("ada@example.com", "correct horse battery")
    print("laptop: signed in as", session.uid)
    token = session.id_token()  # what a store acting as the user sends; refreshed when due

    # the next start of the app: no password asked, no network needed
    restored = FirebaseAuth(store=directory / "laptop-session.json").restore()
    assert restored is not None and restored.uid == session.uid
    assert restored.id_token() == token

    # a second device of the same user signs in on its own
    phone = FirebaseAuth(store=directory / "phone-session.json")
    on_phone = phone.sign_in_with_password("ada@example.com", "correct horse battery")
    assert on_phone.uid == session.uid

    # sign-out on a shared laptop: forget the tokens, remove the user's database
    db = peewee.SqliteDatabase(str(directory / "ada.db"), pragmas={"journal_mode": "wal"})
    db.execute_sql("create table if not exists notes (body text)")
    removed = restored.sign_out(forget_local_data=[db])
    print("laptop: signed out, removed", sorted(path.name for path in removed))
    assert FirebaseAuth(store=directory / "laptop-session.json").restore() is None
    # docs: end

    mode = stat.S_IMODE((directory / "phone-session.json").stat().st_mode)
    print(f"phone: still signed in; its session file is readable by its user only ({mode:o})")
    assert mode == 0o600 and on_phone.id_token()
    for auth in (laptop, phone):
        auth.close()


def run(directory: Path) -> None:
    if os.environ.get("FIREBASE_AUTH_EMULATOR_HOST"):
        main(directory)
        return
    cli = find_firebase_cli()
    if cli is None:
        raise SystemExit("npm install firebase-tools, or set FIREBASE_AUTH_EMULATOR_HOST")
    emulator = AuthEmulator(cli).start()
    os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = emulator.host
    try:
        main(directory)
    finally:
        emulator.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp))
