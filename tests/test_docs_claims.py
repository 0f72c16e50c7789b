"""What the docs say about the API is what the code does: every argument of
``Replicator`` is documented with its default, no example passes a constructor argument
to ``sync()``, and the config examples name tables by the names peewee gives them."""

from __future__ import annotations

import ast
import inspect
import re
import socket
import sys

import peewee

from replicator import EmbeddedRemote, Replicator
from tests.helpers import ROOT, docs_text
from tests.models import MODELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCS = docs_text()
REFERENCE = (ROOT / "docs" / "api" / "replicator.md").read_text()


def _arguments_table() -> dict[str, str]:
    section = REFERENCE.split("## The Replicator's arguments", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)=?` \| ([^|]+) \|", section, flags=re.M)
    return {name: default.strip() for name, default in rows}


def test_every_argument_of_the_replicator_is_in_the_docs_with_its_default(tmp_path):
    table = _arguments_table()
    parameters = list(inspect.signature(Replicator.__init__).parameters.values())[1:]
    assert [p.name for p in parameters] == list(table)  # all of them, in order
    device = Replicator(
        peewee.SqliteDatabase(str(tmp_path / "a.db")), MODELS, EmbeddedRemote(tmp_path / "r")
    )
    #: arguments whose None stands for a default the Replicator picks
    picked = {
        "snapshot_strategy": f"`{type(device.snapshot_strategy).__name__}()`",
        "conflict_strategy": f"`{type(device.conflict_strategy).__name__}()`",
        "device_name": "the host name",
        "clock": "UTC now",
    }
    assert device.local.device_name == socket.gethostname()
    for p in parameters:
        default = table[p.name]
        if p.default is inspect.Parameter.empty:
            assert default == "required", p.name
        elif p.default is None:
            assert default == picked.get(p.name, "`None`"), p.name
        elif isinstance(p.default, str):
            assert default == f'`"{p.default}"`', (p.name, default)
        elif isinstance(p.default, int | tuple):
            assert default == f"`{p.default!r}`", (p.name, default)
    assert table["tombstone_retention"] == "90 days"
    assert Replicator.__init__.__kwdefaults__["tombstone_retention"].days == 90
    keyword_only = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert "conflict_strategy" in keyword_only and "snapshot_strategy" in keyword_only


def test_no_example_passes_a_constructor_argument_to_sync():
    sync_arguments = set(inspect.signature(Replicator.sync).parameters) - {"self"}
    constructor_only = set(_arguments_table()) - sync_arguments
    for name in constructor_only:
        assert not re.search(rf"\bsync(_async)?\([^)]*\b{name}=", DOCS), name


def _table_names(source: str) -> set[str]:
    """The table names of the SyncModels a piece of Python defines."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        if not any(isinstance(b, ast.Name) and b.id == "SyncModel" for b in node.bases):
            continue
        declared = [
            stmt.value.value
            for meta in node.body
            if isinstance(meta, ast.ClassDef) and meta.name == "Meta"
            for stmt in meta.body
            if isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "table_name" for t in stmt.targets)
            and isinstance(stmt.value, ast.Constant)
        ]
        names.add(
            declared[0] if declared else type(node.name, (peewee.Model,), {})._meta.table_name
        )
    return names


def test_the_config_examples_name_tables_as_peewee_does():
    python = "\n".join(re.findall(r"```python\n(.*?)```", DOCS, flags=re.S))  # notest too
    real = _table_names(python) | _table_names((ROOT / "examples/field_campaign.py").read_text())
    named: list[str] = []
    for block in re.findall(r"```toml\n(.*?)```", DOCS, flags=re.S):
        config = tomllib.loads(block)
        named += config.get("download_only", [])
        named += config.get("bundles", {}).get("collections", [])
    assert named, "the docs' config examples name no table"
    assert [n for n in named if n not in real] == []
