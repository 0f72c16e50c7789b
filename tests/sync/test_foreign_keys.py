"""Foreign keys mean across devices what the model says they mean locally.

``CASCADE`` deletes children everywhere, ``SET NULL`` keeps them with the key
cleared (and a concurrent edit of the child survives), ``RESTRICT``/no action
keeps a parent that a child on another device still needs, trees re-parent
without a remote orphan at any moment, many-to-many rows go with either end,
and two keys to one table each follow their own rule. No resolution is silent.
"""

from __future__ import annotations

import peewee
import pytest

from replicator import SyncModel
from replicator.testing import FaultyRemote
from tests.helpers import snapshot_rows


class Owner(SyncModel):
    name = peewee.TextField(default="")

    class Meta:
        table_name = "owner"


class Item(SyncModel):
    owner = peewee.ForeignKeyField(Owner, null=True, on_delete="SET NULL", backref="items")
    text = peewee.TextField(default="")

    class Meta:
        table_name = "item"


class Pin(SyncModel):
    owner = peewee.ForeignKeyField(Owner, on_delete="RESTRICT", backref="pins")
    label = peewee.TextField(default="")

    class Meta:
        table_name = "pin"


class Node(SyncModel):
    parent = peewee.ForeignKeyField("self", null=True, on_delete="CASCADE", backref="kids")
    name = peewee.TextField(default="")

    class Meta:
        table_name = "node"


class Tag(SyncModel):
    name = peewee.TextField(default="")

    class Meta:
        table_name = "tag"


class ItemTag(SyncModel):
    item = peewee.ForeignKeyField(Item, on_delete="CASCADE")
    tag = peewee.ForeignKeyField(Tag, on_delete="CASCADE")

    class Meta:
        table_name = "item_tag"


class Transfer(SyncModel):
    src = peewee.ForeignKeyField(Owner, null=True, on_delete="SET NULL", backref="sent")
    dst = peewee.ForeignKeyField(Owner, on_delete="CASCADE", backref="received")

    class Meta:
        table_name = "transfer"


MODELS = [Owner, Item, Pin, Node, Tag, ItemTag, Transfer]


def _pair(make_device, **kw):
    return make_device("a", models=MODELS, **kw), make_device("b", models=MODELS, **kw)


def _same(a, b):
    assert snapshot_rows(a, MODELS) == snapshot_rows(b, MODELS)


def test_set_null_keeps_the_child_everywhere_with_its_concurrent_edit(make_device, remote):
    a, b = _pair(make_device)
    with a.bound():
        owner = Owner.create(name="o")
        item = Item.create(owner=owner, text="v1")
    a.sync()
    b.sync()
    with a.bound():
        Owner.delete().where(Owner.id == owner.id).execute()  # SQLite clears item.owner
        assert Item.get_by_id(item.id).owner_id is None
    with b.bound():
        Item.update(text="edited on b").where(Item.id == item.id).execute()
    a.sync()
    report = b.sync()
    assert any(c.outcome == "set-null" and c.id == item.id for c in report.conflicts)
    a.sync()
    for device in (a, b):
        with device.bound():
            row = Item.get_by_id(item.id)
            assert (row.owner_id, row.text) == (None, "edited on b")
            assert Owner.select().count() == 0
    _same(a, b)
    doc = remote.all_docs("item")[item.id]
    assert not doc.deleted and doc.data["owner_id"] is None


@pytest.mark.parametrize("first", ["deleter", "creator"])
def test_set_null_for_a_child_created_offline_under_a_parent_deleted_elsewhere(
    make_device, remote, first
):
    """Either device may sync first. When the creator does, the deleter downloads the
    child and clears its key while applying it: that is its own change, and goes up
    (found by the convergence property of app writes)."""
    a, b = _pair(make_device)
    with a.bound():
        owner = Owner.create(name="o")
    a.sync()
    b.sync()
    with a.bound():
        Owner.delete().where(Owner.id == owner.id).execute()
    with b.bound():
        item = Item.create(owner=owner.id, text="made offline on b")
    if first == "creator":
        b.sync()
        report = a.sync()  # downloads the item, clears its key, uploads that
        assert [(c.outcome, c.id) for c in report.conflicts] == [("set-null", item.id)]
        assert remote.all_docs("item")[item.id].data["owner_id"] is None
    a.sync()
    b.sync()
    a.sync()
    for device in (a, b):
        with device.bound():
            assert Item.get_by_id(item.id).owner_id is None
    assert remote.all_docs("item")[item.id].data["owner_id"] is None
    _same(a, b)


def test_restrict_keeps_a_parent_a_child_elsewhere_still_needs(make_device, remote):
    a, b = _pair(make_device)
    with a.bound():
        owner = Owner.create(name="needed")
    a.sync()
    b.sync()
    with b.bound():
        pin = Pin.create(owner=owner.id, label="made offline")
    with a.bound():
        Owner.delete().where(Owner.id == owner.id).execute()  # a sees no pin: allowed
    a.sync()
    report = b.sync()
    [resolution] = [c for c in report.conflicts if c.id == owner.id]
    assert resolution.outcome == "restored" and "pin/" in resolution.strategy
    a.sync()
    for device in (a, b):
        with device.bound():
            assert Owner.get_by_id(owner.id).name == "needed"
            assert Pin.get_by_id(pin.id).owner_id == owner.id
    assert not remote.all_docs("owner")[owner.id].deleted
    _same(a, b)
    assert sum(a.dirty_counts().values()) == sum(b.dirty_counts().values()) == 0


def test_restrict_lets_a_parent_go_when_its_children_were_deleted_too(make_device, remote):
    a, b = _pair(make_device)
    with a.bound():
        owner = Owner.create(name="o")
        pin = Pin.create(owner=owner, label="p")
    a.sync()
    b.sync()
    with a.bound():
        Pin.delete().where(Pin.id == pin.id).execute()
        Owner.delete().where(Owner.id == owner.id).execute()
    a.sync()
    report = b.sync()
    assert not [c for c in report.conflicts if c.outcome == "restored"]
    with b.bound():
        assert Owner.select().count() == 0 and Pin.select().count() == 0
    _same(a, b)


def test_a_tree_re_parented_under_a_new_node_converges(make_device, remote):
    a, b = _pair(make_device)
    with a.bound():
        root = Node.create(name="root")
        x = Node.create(parent=root, name="x")
        y = Node.create(parent=x, name="y")
    a.sync()
    b.sync()
    with a.bound():
        z = Node.create(parent=root, name="z")
        Node.update(parent=z).where(Node.id == y.id).execute()
        Node.update(parent=y).where(Node.id == x.id).execute()  # x now under y
    a.sync()
    b.sync()
    _same(a, b)
    with b.bound():
        assert Node.get_by_id(x.id).parent_id == y.id
        assert Node.get_by_id(y.id).parent_id == z.id
    with b.bound():  # a cascade through the tree reaches every descendant
        Node.delete().where(Node.id == root.id).execute()
    b.sync()
    a.sync()
    with a.bound():
        assert Node.select().count() == 0


def test_a_deep_tree_uploaded_over_several_batches_never_leaves_a_remote_orphan(
    make_device, remote
):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty, models=MODELS)
    ids = [f"{999 - i:08d}-0000-4000-8000-000000000000" for i in range(520)]  # ids fall
    with a.bound():
        parent = None
        for node_id in ids:  # each node's parent has a larger id: id order is child-first
            parent = Node.create(id=node_id, parent=parent, name=node_id[:8])

    def check(*_args, **_kw):
        docs = remote.all_docs("node")
        for doc in docs.values():
            assert doc.data.get("parent_id") in (None, *docs), "a remote orphan"

    faulty.hooks["push"] = check
    a.sync()
    check()
    b = make_device("b", models=MODELS)
    b.sync()
    _same(a, b)


def test_many_to_many_rows_go_with_either_end_and_two_keys_follow_their_own_rules(
    make_device, remote
):
    a, b = _pair(make_device)
    with a.bound():
        alice, bob = Owner.create(name="alice"), Owner.create(name="bob")
        item, tag = Item.create(text="i"), Tag.create(name="t")
        link = ItemTag.create(item=item, tag=tag)
        sent = Transfer.create(src=alice, dst=bob)
        received = Transfer.create(src=bob, dst=alice)
    a.sync()
    b.sync()
    with a.bound():
        Tag.delete().where(Tag.id == tag.id).execute()
        Owner.delete().where(Owner.id == alice.id).execute()
    a.sync()
    report = b.sync()
    with b.bound():
        assert not ItemTag.select().where(ItemTag.id == link.id).exists()
        assert Item.get_by_id(item.id).text == "i"
        assert Transfer.get_by_id(sent.id).src_id is None  # SET NULL
        assert not Transfer.select().where(Transfer.id == received.id).exists()  # CASCADE
    assert any(c.outcome == "set-null" and c.id == sent.id for c in report.conflicts)
    a.sync()
    _same(a, b)
