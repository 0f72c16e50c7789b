"""replicator runs wherever Python and SQLite do: no module of the package needs a
POSIX-only module to be imported (field laptops often run Windows), and the
supported platforms are stated where a user looks for them."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: modules that exist only on POSIX systems (a Windows Python has none of them); not
#: ``posix`` itself, which the standard library picks on its own by ``os.name``
POSIX_ONLY = ("fcntl", "resource", "termios", "tty", "pty", "pwd", "grp", "syslog")

IMPORT_EVERYTHING = f"""
import sys
for name in {POSIX_ONLY!r}:
    sys.modules[name] = None  # "import fcntl" now raises ImportError, as on Windows
import importlib, pkgutil
import replicator
names = [m.name for m in pkgutil.walk_packages(replicator.__path__, "replicator.")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules")
"""


def test_every_module_imports_without_posix_only_modules():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    count = int(done.stdout.split()[0])
    assert count > 40, done.stdout  # every module was walked, not just the package


def test_the_supported_platforms_are_stated():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    classifiers = project["classifiers"]
    assert "Operating System :: OS Independent" in classifiers
    versions = {c.rsplit(" :: ", 1)[1] for c in classifiers if "Python :: 3." in c}
    assert {"3.10", "3.11", "3.12"} <= versions, classifiers
    assert project["requires-python"] == ">=3.10"
    assert any(d.startswith("filelock") for d in project["dependencies"])
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "Linux, macOS and Windows" in readme
