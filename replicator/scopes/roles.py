"""Scopes, members and roles, declared in Python: who may do what to which table.

Data shared by a team lives in a **scope**: a campaign, a group, a reference-data
scope. In Firestore a scope is the root ``scopes/{scopeId}``: its synced collections
are under it, its kind is the scope document's ``kind`` field (written by a server),
and its members are ``scopes/{scopeId}/members/{uid}``, each holding the member's
``role``, ``uid`` and ``kind`` (``members.member_document``). A device syncs every
scope of its user with a :class:`~replicator.scopes.device.ScopedReplicator`.

An app declares its scope kinds once::

    from replicator.scopes import ScopeKind, Scopes

    CAMPAIGN = ScopeKind(
        "campaign",
        roles=["collector", "supervisor", "admin"],
        admins=["admin"],
        tables={
            "households": {
                "collector": "read create update:own delete:own",
                "supervisor": "read update delete",
                "admin": "read create update delete",
            },
            "form_schemas": {"*": "read"},
        },
    )
    SCOPES = Scopes([CAMPAIGN], owners={"households": "collector"})

A grant is a string of operations, each ``read``, ``create``, ``update`` or
``delete``, optionally ``:own``. **Own** means the row's *owner column* holds the
caller's uid: ``owners`` names, per table, the column in which the app writes the
signed-in user's uid when it creates a row (``Household(collector=session.uid)``).
Devices are not users (``updatedBy`` names the device that wrote last, and a
supervisor's edit changes it), so ownership is a column of the row, set once: the
rules require it to be the creator's uid on create and refuse any change of it.
``"*"`` grants every role of the kind. A role given nothing on a table has no access
to it; a table no kind names is nobody's in scopes.

Deletes travel as tombstones: an update setting ``deleted`` to true needs the
``delete`` grant (any other update the ``update`` grant), and so does the purge of an
expired tombstone. ``read:own`` lets a role read only the rows it owns: Firestore
then refuses any query not filtered on the owner column; a ``ScopedReplicator``
downloads such a table so filtered.

Members: only the kind's ``admins`` roles create, change and remove members' documents,
never their own (nobody promotes themselves, and an admin cannot lock the scope by
removing themselves); a member reads their own document, admins all of them.

The same declaration is compiled to Firestore rules (:func:`scoped_rules` in
``rules.py``, ``replicator rules --scopes``) and enforced by the ingest service for
bundles posted into a scope (:meth:`ScopeKind.refusal`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

from ..errors import ConfigurationError

Operation = Literal["read", "create", "update", "delete"]
OPERATIONS: tuple[Operation, ...] = ("read", "create", "update", "delete")
#: what a grant gives: nothing, the rows the caller owns, or every row
Reach = Literal["none", "own", "all"]
#: the collection of a scope's members, and the field holding a member's role
MEMBERS = "members"
ROLE = "role"
#: the fields an admin may write in a member's document
MEMBER_FIELDS = (ROLE, "uid", "kind", "addedBy", "changedAt")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@attrs.frozen
class Grant:
    """What one role may do to one table: each operation ``"none"``, ``"own"`` (rows
    whose owner column is the caller's uid) or ``"all"``. ``Grant.parse("read create
    update:own")`` reads the string form."""

    read: Reach = "none"
    create: Reach = "none"
    update: Reach = "none"
    delete: Reach = "none"

    @classmethod
    def parse(cls, text: str) -> Grant:
        """A grant from its string form: operations separated by spaces or commas,
        each optionally ``:own``. ``ConfigurationError`` naming what it cannot read."""
        reach: dict[str, Reach] = {}
        for word in re.split(r"[\s,]+", text.strip()):
            if not word:
                continue
            op, _, how = word.partition(":")
            if op not in OPERATIONS or how not in ("", "own", "all"):
                raise ConfigurationError(
                    f"the grant {text!r} has {word!r}: not an operation",
                    hint="write operations among read, create, update, delete,"
                    " each optionally ':own' (e.g. 'read create update:own')",
                )
            if op == "create" and how == "own":
                raise ConfigurationError(
                    f"the grant {text!r} has 'create:own': a created row is always the"
                    " creator's own (its owner column must be their uid)",
                    hint="write 'create'",
                )
            reach[op] = "own" if how == "own" else "all"
        return cls(**reach)

    def reach(self, op: Operation) -> Reach:
        """What this grant gives for ``op``."""
        value: Reach = getattr(self, op)
        return value

    def uses_own(self) -> bool:
        return "own" in (self.read, self.update, self.delete)


def _grant(value: Grant | str, where: str) -> Grant:
    if isinstance(value, Grant):
        return value
    if isinstance(value, str):
        return Grant.parse(value)
    raise ConfigurationError(f"{where}: {value!r} is not a grant", hint="write e.g. 'read create'")


def _names(value: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"{what} {name!r} cannot be named in security rules",
                hint="use letters, digits, '_' and '-', beginning with a letter or '_'",
            )
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{what}s are named twice: {', '.join(names)}")
    return names


def _roles(value: Iterable[str]) -> tuple[str, ...]:
    return _names(value, "the role")


def _admin_roles(value: Iterable[str]) -> tuple[str, ...]:
    return _names(value, "the admin role")


def _grants(
    kind: str, roles: tuple[str, ...], tables: Mapping[str, Mapping[str, Grant | str]]
) -> dict[str, dict[str, Grant]]:
    """``tables`` with every grant parsed and ``"*"`` spread over the roles."""
    out: dict[str, dict[str, Grant]] = {}
    for table, by_role in tables.items():
        _names([table], "the table")
        if not isinstance(by_role, Mapping):
            raise ConfigurationError(
                f"scope kind {kind!r}, table {table!r}: give a mapping role -> grant"
            )
        unknown = sorted(set(by_role) - {*roles, "*"})
        if unknown:
            raise ConfigurationError(
                f"scope kind {kind!r}, table {table!r} names roles the kind does not have:"
                f" {', '.join(unknown)} (its roles: {', '.join(roles)})",
                hint="declare the role in roles=, or correct its name",
            )
        every = by_role.get("*")
        out[table] = {}
        for role in roles:
            value = by_role.get(role, every)
            if value is not None:
                out[table][role] = _grant(value, f"scope kind {kind!r}, table {table!r}")
    return out


@attrs.frozen
class ScopeKind:
    """A kind of scope (``"campaign"``, ``"group"``): its ``roles``, the ``admins``
    roles that change members, and per table the grant of each role (a :class:`Grant`
    or its string form; ``"*"`` for every role)."""

    name: str = attrs.field()
    roles: tuple[str, ...] = attrs.field(converter=_roles)
    admins: tuple[str, ...] = attrs.field(converter=_admin_roles)
    #: table -> role -> grant (strings are parsed into :class:`Grant` on creation)
    tables: Mapping[str, Mapping[str, Grant | str]] = attrs.field()

    def __attrs_post_init__(self) -> None:
        _names([self.name], "the scope kind")
        if not self.roles:
            raise ConfigurationError(f"scope kind {self.name!r} has no roles")
        strangers = sorted(set(self.admins) - set(self.roles))
        if strangers:
            raise ConfigurationError(
                f"scope kind {self.name!r}: admins {', '.join(strangers)} are not among its"
                f" roles ({', '.join(self.roles)})"
            )
        if MEMBERS in self.tables:
            raise ConfigurationError(
                f"scope kind {self.name!r} names a table {MEMBERS!r}: a scope keeps its"
                " members' documents under that name",
                hint="rename the table",
            )
        object.__setattr__(self, "tables", _grants(self.name, self.roles, self.tables))

    def grant(self, role: str | None, table: str) -> Grant:
        """What ``role`` (None: not a member) may do to ``table``."""
        value = None if role is None else self.tables.get(table, {}).get(role)
        if value is None:
            return Grant()
        return value if isinstance(value, Grant) else Grant.parse(value)

    def roles_with(self, table: str, op: Operation, reach: Reach) -> list[str]:
        """The roles whose grant on ``table`` gives exactly ``reach`` for ``op``."""
        return [r for r in self.roles if self.grant(r, table).reach(op) == reach]

    def refusal(
        self,
        role: str | None,
        table: str,
        uid: str,
        row: Mapping[str, object],
        stored: Mapping[str, object] | None,
        owner: str | None,
    ) -> str | None:
        """Why user ``uid`` with ``role`` may not write ``row`` over ``stored`` (None:
        a create) in ``table``, whose owner column is ``owner``; None when they may.
        What the compiled rules decide for the same write, for the ingest service."""
        if role is None:
            return f"user {uid} is not a member of this scope"
        grant = self.grant(role, table)
        if owner is not None and stored is None and row.get(owner) != uid:
            return f"{owner} must be the creating user's uid ({uid})"
        if owner is not None and stored is not None and row.get(owner) != stored.get(owner):
            return f"{owner} names the row's creator and cannot change"
        if stored is None:
            if grant.create == "none":
                return f"a {role} may not create {table} rows"
            return None
        op: Operation = "delete" if row.get("deleted") and not stored.get("deleted") else "update"
        reach = grant.reach(op)
        if reach == "all":
            return None
        if reach == "own" and owner is not None and stored.get(owner) == uid:
            return None
        mine = " of others" if reach == "own" else ""
        return f"a {role} may not {op} {table} rows{mine}"


def _kinds(value: Iterable[ScopeKind]) -> tuple[ScopeKind, ...]:
    return tuple(value)


def _owners(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


@attrs.frozen
class Scopes:
    """An app's scope kinds, and per table the column that names the user who created a
    row (``owners``: table -> column), which ``:own`` grants compare with the caller."""

    kinds: tuple[ScopeKind, ...] = attrs.field(converter=_kinds)
    owners: Mapping[str, str] = attrs.field(factory=dict, converter=_owners)

    def __attrs_post_init__(self) -> None:
        names = [k.name for k in self.kinds]
        if not names:
            raise ConfigurationError("no scope kinds declared", hint="pass ScopeKind(...)s")
        if len(set(names)) != len(names):
            raise ConfigurationError(f"scope kinds are named twice: {', '.join(names)}")
        for table, column in self.owners.items():
            _names([table], "the table")
            _names([column], "the owner column")
        for kind in self.kinds:
            for table in kind.tables:
                if table not in self.owners and any(
                    kind.grant(r, table).uses_own() for r in kind.roles
                ):
                    raise ConfigurationError(
                        f"scope kind {kind.name!r} grants ':own' on {table!r}, which has no"
                        " owner column",
                        hint=f"name it: Scopes(..., owners={{{table!r}: 'column'}})",
                    )

    def kind(self, name: str) -> ScopeKind:
        """The kind named ``name``; ``ConfigurationError`` naming the known ones."""
        for kind in self.kinds:
            if kind.name == name:
                return kind
        known = ", ".join(k.name for k in self.kinds)
        raise ConfigurationError(f"no scope kind {name!r} (declared: {known})")

    def tables(self) -> list[str]:
        """Every table some kind grants something on, in the order first named."""
        seen: dict[str, None] = {}
        for kind in self.kinds:
            seen.update(dict.fromkeys(kind.tables))
        return list(seen)

    def check(self, tables: Sequence[str], columns: Mapping[str, Sequence[str]]) -> None:
        """Refuse (``ConfigurationError``) tables the models lack and owner columns that
        are not columns of their table; ``columns`` maps each table to its columns."""
        unknown = sorted({*self.tables(), *self.owners} - set(tables))
        if unknown:
            raise ConfigurationError(
                f"the scopes name tables the models do not have: {', '.join(unknown)}"
                f" (the models' tables: {', '.join(tables)})",
                hint="pass the models of those tables, or correct the names",
            )
        for table, column in self.owners.items():
            if column not in columns.get(table, ()):
                raise ConfigurationError(
                    f"the owner column {table}.{column} is not a column of {table}",
                    hint=f"add a text column {column} holding the creating user's uid",
                )
