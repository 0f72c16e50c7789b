"""The scopes declaration: parsed, validated (a mistake is a ConfigurationError naming
it), judged as the rules judge a write (the ingest service's side), and compiled."""

from __future__ import annotations

import pytest

from replicator import ConfigurationError
from replicator.scopes import Grant, ScopeKind, Scopes, scoped_rules
from tests.scope_models import CAMPAIGN, MODELS, SCOPES


def test_a_grant_reads_its_string_form():
    assert Grant.parse("read, create update:own") == Grant("all", "all", "own", "none")
    for bad, message in (
        ("read write", "'write': not an operation"),
        ("create:own", "a created row is always the creator's own"),
        ("update:some", "'update:some': not an operation"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            Grant.parse(bad)


def _kind(**over):
    spec = {"roles": ["a", "b"], "admins": ["a"], "tables": {"t": {"a": "read"}}, **over}
    return ScopeKind("k", **spec)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"tables": {"t": {"c": "read"}}}, "names roles the kind does not have: c"),
        ({"admins": ["z"]}, "admins z are not among its roles"),
        ({"roles": []}, "has no roles"),
        ({"roles": ["a", "a"]}, "named twice"),
        ({"roles": ["a b"]}, "cannot be named in security rules"),
        ({"tables": {"members": {"a": "read"}}}, "keeps its members' documents"),
        ({"tables": {"t": {"a": 5}}}, "5 is not a grant"),
    ],
)
def test_a_mistaken_kind_is_refused_naming_it(over, message):
    with pytest.raises(ConfigurationError, match=message):
        _kind(**over)


def test_a_mistaken_declaration_is_refused_naming_it():
    with pytest.raises(ConfigurationError, match="grants ':own' on 't', which has no owner"):
        Scopes([_kind(tables={"t": {"a": "update:own"}})])
    with pytest.raises(ConfigurationError, match="kinds are named twice"):
        Scopes([_kind(), _kind()])
    with pytest.raises(ConfigurationError, match="tables the models do not have: t"):
        scoped_rules(MODELS, Scopes([_kind()]))
    owners = Scopes([CAMPAIGN], owners={"registrations": "author"})
    with pytest.raises(ConfigurationError, match=r"registrations\.author is not a column"):
        scoped_rules(MODELS, owners)
    with pytest.raises(ConfigurationError, match=r"no scope kind 'x' \(declared: campaign, group"):
        SCOPES.kind("x")


def test_star_grants_every_role_and_a_role_without_a_grant_gets_nothing():
    assert CAMPAIGN.grant("supervisor", "forms") == Grant(read="all")
    assert CAMPAIGN.grant(None, "forms") == Grant()
    assert SCOPES.kind("group").grant("teacher", "registrations") == Grant()


@pytest.mark.parametrize(
    ("role", "uid", "row", "stored", "why"),
    [
        ("collector", "a", {"collector": "a"}, None, None),
        ("collector", "a", {"collector": "b"}, None, "collector must be the creating user"),
        ("collector", "a", {"collector": "a"}, {"collector": "a"}, None),
        ("collector", "a", {"collector": "b"}, {"collector": "b"}, "rows of others"),
        ("collector", "a", {"collector": "a"}, {"collector": "b"}, "cannot change"),
        ("collector", "a", {"collector": "a", "deleted": True}, {"collector": "a"}, None),
        ("supervisor", "s", {"collector": "a"}, {"collector": "a"}, None),
        ("supervisor", "s", {"collector": "s"}, None, "a supervisor may not create"),
        ("supervisor", "s", {"collector": "a", "deleted": True}, {"collector": "a"}, None),
        (None, "o", {"collector": "o"}, None, "not a member"),
    ],
)  # fmt: skip
def test_the_ingest_side_judges_a_write_as_the_rules_do(role, uid, row, stored, why):
    got = CAMPAIGN.refusal(role, "registrations", uid, row, stored, "collector")
    assert (got is None) if why is None else (why in str(got)), got


def test_the_compiled_rules_keep_the_users_roots_and_add_the_scopes():
    rules = scoped_rules(MODELS, SCOPES).rules
    assert "    match /users/{uid} {" in rules and "    match /scopes/{scopeId} {" in rules
    assert rules.count("match /scopes/{scopeId}") == 1
    assert "getAfter(/databases/$(database)/documents/scopes/$(scopeId)/devices/$(device))" in rules
    assert "request.resource.data['collector'] == request.auth.uid" in rules
    assert "!('collector' in changedKeys())" in rules
    assert "request.auth.uid != uid && isMemberDocument(scopeId, uid)" in rules
    assert rules.endswith("    }\n  }\n}\n")
