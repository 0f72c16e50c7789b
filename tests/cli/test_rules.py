"""``replicator rules``: the files it writes, ``--check``, and the mistakes it refuses."""

from __future__ import annotations

import json

from click.testing import CliRunner

from replicator.cli import main
from replicator.scopes import firestore_rules
from tests.campaign_models import MODELS as CAMPAIGN


def _run(*args):
    return CliRunner().invoke(main, ["rules", *args])


def test_rules_writes_both_files_for_the_models_and_checks_them(tmp_path):
    result = _run(
        "--models", "tests.campaign_models:MODELS", "--out", str(tmp_path),
        "--download-only", "form_schemas", "--download-only", "localizations",
        "--upload-only", "households", "--ingest-queue", "--retention-days", "30",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "for households, form_schemas, localizations" in result.output
    assert "firebase deploy --only firestore:rules,firestore:indexes" in result.output
    expected = firestore_rules(
        CAMPAIGN,
        download_only=["form_schemas", "localizations"],
        upload_only=["households"],
        ingest_queue=True,
        retention=__import__("datetime").timedelta(days=30),
        source="tests.campaign_models:MODELS",
    )
    assert (tmp_path / "firestore.rules").read_text() == expected.rules
    assert json.loads((tmp_path / "firestore.indexes.json").read_text())["indexes"]
    assert "duration.value(2592000, 's')" in expected.rules
    check = _run("--models", "tests.campaign_models:MODELS", "--out", str(tmp_path), "--check")
    assert check.exit_code == 1 and "not what tests.campaign_models:MODELS makes" in check.output
    current = _run(
        "--models", "tests.campaign_models:MODELS", "--out", str(tmp_path), "--check",
        "--download-only", "form_schemas", "--download-only", "localizations",
        "--upload-only", "households", "--ingest-queue", "--retention-days", "30",
    )  # fmt: skip
    assert current.exit_code == 0 and "are current" in current.output


def test_rules_refuses_what_names_no_model_in_one_line(tmp_path):
    for args, message in (
        (["--models", "no_such_module"], "--models: cannot import the models module"),
        (["--models", "tests.models", "--download-only", "nope"], "download_only names 'nope'"),
        (["--models", "tests.models", "--out", str(tmp_path / "missing")], "does not exist"),
    ):
        result = _run(*args)
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not list(tmp_path.iterdir())


def test_rules_with_scopes_writes_the_scopes_rules_too(tmp_path):
    from replicator.scopes import scoped_rules
    from tests.scope_models import MODELS, SCOPES

    spec = ["--models", "tests.scope_models:MODELS", "--out", str(tmp_path)]
    result = _run(*spec, "--scopes", "tests.scope_models:SCOPES")
    assert result.exit_code == 0, result.output
    expected = scoped_rules(MODELS, SCOPES, source="tests.scope_models:MODELS")
    assert (tmp_path / "firestore.rules").read_text() == expected.rules
    assert "match /scopes/{scopeId} {" in expected.rules
    for bad, message in (
        ("tests.scope_models:MODELS", "is not a Scopes declaration"),
        ("tests.scope_models:NOPE", "--scopes: tests.scope_models has no NOPE"),
        ("tests.scope_models", "is not 'module:NAME'"),
    ):
        refused = _run(*spec, "--scopes", bad)
        assert refused.exit_code == 1 and message in refused.output, refused.output
        assert "Traceback" not in refused.output
