"""Keys, the Indexer and tombstones."""

import pytest

from kubeling.client.store import (
    DeletedFinalStateUnknown,
    Indexer,
    meta_namespace_key,
    object_of,
    split_meta_namespace_key,
)


def obj(name, ns=None, **labels):
    meta = {"name": name, "labels": labels}
    if ns:
        meta["namespace"] = ns
    return {"metadata": meta}


def by_label(label):
    return lambda o: [o["metadata"]["labels"][label]] if label in o["metadata"]["labels"] else []


@pytest.mark.parametrize("o,key", [
    pytest.param(obj("p", "ns"), "ns/p", id="namespaced"),
    pytest.param(obj("node-1"), "node-1", id="cluster-scoped"),
    pytest.param(DeletedFinalStateUnknown("ns/p", obj("p", "ns")), "ns/p", id="tombstone"),
])
def test_meta_namespace_key(o, key):
    assert meta_namespace_key(o) == key


@pytest.mark.parametrize("key,parts", [
    pytest.param("ns/p", ("ns", "p"), id="namespaced"),
    pytest.param("node-1", ("", "node-1"), id="cluster-scoped"),
])
def test_split_key(key, parts):
    assert split_meta_namespace_key(key) == parts


@pytest.mark.parametrize("key", ["a/b/c", "ns/"])
def test_split_bad_key(key):
    with pytest.raises(ValueError):
        split_meta_namespace_key(key)


def test_key_needs_name():
    with pytest.raises(ValueError):
        meta_namespace_key({"metadata": {}})


def test_add_get_delete_and_indices_follow_updates():
    idx = Indexer({"app": by_label("app")})
    idx.add(obj("a", "ns1", app="web"))
    idx.add(obj("b", "ns1", app="db"))
    idx.add(obj("c", "ns2", app="web"))
    assert [o["metadata"]["name"] for o in idx.by_index("app", "web")] == ["a", "c"]
    assert idx.index_keys("namespace", "ns1") == ["ns1/a", "ns1/b"]
    old = idx.add(obj("a", "ns1", app="db"))  # relabelled: moves between index values
    assert old["metadata"]["labels"] == {"app": "web"}
    assert idx.index_keys("app", "web") == ["ns2/c"]
    assert idx.index_keys("app", "db") == ["ns1/a", "ns1/b"]
    assert idx.delete("ns1/b") is not None
    assert idx.delete(obj("zzz", "ns1")) is None
    assert idx.index_keys("app", "db") == ["ns1/a"]
    assert idx.index_values("app") == ["db", "web"]
    assert len(idx) == 2 and "ns2/c" in idx and idx.get("ns1/b") is None


def test_replace_and_late_indexer():
    idx = Indexer()
    idx.add(obj("old", "ns"))
    idx.replace([obj("x", "a", tier="1"), obj("y", "b")])
    assert sorted(idx.list_keys()) == ["a/x", "b/y"]
    assert idx.by_namespace("ns") == []
    idx.add_indexers({"tier": by_label("tier")})
    assert idx.index_keys("tier", "1") == ["a/x"]
    with pytest.raises(ValueError):
        idx.add_indexers({"tier": by_label("tier")})
    with pytest.raises(KeyError):
        idx.by_index("nope", "x")


def test_object_of_unwraps_tombstones():
    o = obj("p", "ns")
    assert object_of(o) is o
    assert object_of(DeletedFinalStateUnknown("ns/p", o)) is o
