"""The protobuf schema table: wire primitives, descriptor.proto decoding, the gzip scan, the join
with Go struct information, the on-disk format and `load()`'s search order.

Descriptors here are built by hand with the wire writer (descriptor.proto field numbers), so
these tests do not depend on kubectl; the last ones read the real kubectl binary, which the
machine ships (1.32) and `make clients` installs (1.33).
"""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeling.api.protobuf import descriptors as d
from kubeling.api.protobuf import gotypes, wire


# -- wire ------------------------------------------------------------------------------------------

@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_varint_round_trips_int64(n):
    value, end = wire.read_varint(wire.varint(n), 0)
    assert wire.to_int64(value) == n
    assert end == len(wire.varint(n))


def test_negative_int32_uses_ten_bytes_like_go():
    assert len(wire.varint(-1)) == 10


@pytest.mark.parametrize("buf", [
    pytest.param(b"\x0a\x05abc", id="length-past-end"),
    pytest.param(b"\x08\x80", id="truncated-varint"),
    pytest.param(b"\x0b", id="group-wire-type"),
    pytest.param(b"\x09\x00\x00", id="truncated-fixed64"),
    pytest.param(b"\x00\x01", id="field-number-zero"),
])
def test_iter_fields_rejects_malformed_bytes(buf):
    with pytest.raises(wire.WireError):
        list(wire.iter_fields(buf))


def test_iter_fields_yields_every_wire_type():
    buf = (wire.varint_field(1, 150) + wire.len_field(2, b"hi") + wire.double_field(3, 1.5)
           + wire.key(4, wire.FIXED32) + b"\x00\x00\xc0\x3f")
    got = list(wire.iter_fields(buf))
    assert got[0] == (1, wire.VARINT, 150)
    assert got[1] == (2, wire.LEN, b"hi")
    assert wire.double(got[2][2]) == 1.5
    assert wire.float32(got[3][2]) == 1.5


# -- descriptor.proto --------------------------------------------------------------------------

def _fd(name, number, typ, label=d.OPTIONAL, type_name="", json_name=""):
    out = wire.len_field(1, name.encode()) + wire.varint_field(3, number)
    out += wire.varint_field(4, label) + wire.varint_field(5, typ)
    if type_name:
        out += wire.len_field(6, type_name.encode())
    if json_name:
        out += wire.len_field(10, json_name.encode())
    return out


def _file() -> bytes:
    """A FileDescriptorProto like core/v1's ConfigMap: a message with a map and a nested entry."""
    entry = (wire.len_field(1, b"DataEntry")
             + wire.len_field(2, _fd("key", 1, d.STRING))
             + wire.len_field(2, _fd("value", 2, d.STRING))
             + wire.len_field(7, wire.varint_field(7, 1)))  # MessageOptions.map_entry
    config_map = (wire.len_field(1, b"ConfigMap")
                  + wire.len_field(2, _fd("metadata", 1, d.MESSAGE,
                                          type_name=".k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta"))
                  + wire.len_field(2, _fd("data", 2, d.MESSAGE, d.REPEATED,
                                          ".k8s.io.api.core.v1.ConfigMap.DataEntry"))
                  + wire.len_field(2, _fd("immutable", 4, d.BOOL))
                  + wire.len_field(3, entry))
    return (wire.len_field(1, b"k8s.io/api/core/v1/generated.proto")
            + wire.len_field(2, b"k8s.io.api.core.v1")
            + wire.len_field(4, config_map))


def test_parse_file_reads_messages_nested_types_and_map_entries():
    name, package, messages = d.parse_file(_file())
    assert (name, package) == ("k8s.io/api/core/v1/generated.proto", "k8s.io.api.core.v1")
    entry, fields = messages["k8s.io.api.core.v1.ConfigMap"]
    assert not entry
    assert fields[1] == ("data", 2, d.REPEATED, d.MESSAGE, "k8s.io.api.core.v1.ConfigMap.DataEntry", "")
    assert messages["k8s.io.api.core.v1.ConfigMap.DataEntry"][0] is True


def test_find_descriptors_scans_gzip_streams_in_a_binary():
    other = gzip.compress(b"\x0a\x08other.go" + b"x" * 50, mtime=0)
    blob = b"\x00junk" + other + b"\x1f\x8b\x08\x00\x00\x00\x00\x00broken" + gzip.compress(_file(), mtime=0) + b"tail"
    assert d.find_descriptors(blob) == [_file()]


def _go() -> gotypes.GoTypes:
    f = gotypes.GoField
    return gotypes.GoTypes(structs={"k8s.io/api/core/v1.ConfigMap": {
        1: f(1, "metadata", True, False, False, False, gotypes.STRUCT),
        2: f(2, "data", True, False, False, False, gotypes.MAP),
        4: f(4, "immutable", True, False, False, True, gotypes.BOOL)}})


def test_build_joins_go_flags_and_marks_maps():
    table = d.build([_file()], _go(), "test")
    cm = table.messages["k8s.io.api.core.v1.ConfigMap"]
    assert cm.fields[2].is_map and cm.fields[2].json_name == "data"
    assert cm.fields[4].go == "po"           # *bool, omitempty
    assert cm.fields[1].go == "o"
    assert table.messages["k8s.io.api.core.v1.ConfigMap.DataEntry"].entry
    assert table.messages["k8s.io.api.core.v1.ConfigMap.DataEntry"].fields[1].go is None


def test_build_without_go_leaves_flags_unknown():
    table = d.build([_file()], None)
    assert not table.go
    assert all(f.go is None for f in table.messages["k8s.io.api.core.v1.ConfigMap"].fields.values())


def test_table_json_round_trip():
    table = d.build([_file()], _go(), "src")
    again = d.Table.from_json(table.to_json())
    assert again.messages == table.messages
    assert (again.source, again.go) == ("src", True)


def test_table_json_rejects_other_formats():
    with pytest.raises(ValueError):
        d.Table.from_json(b'{"format": 0, "messages": {}}')


def test_load_prefers_the_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    d.write(d.build([_file()], None, "from-env"), path)
    monkeypatch.setenv(d.ENV, str(path))
    d.load.cache_clear()
    try:
        assert d.load().source == "from-env"
    finally:
        d.load.cache_clear()


def test_load_without_any_source_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(d.ENV, str(tmp_path / "missing.json"))
    monkeypatch.setattr(d, "cache_path", lambda: tmp_path / "also-missing.json")
    monkeypatch.setattr(d, "kubectl_candidates", lambda: [])
    d.load.cache_clear()
    try:
        with pytest.raises(d.Unavailable, match="protobuf schemas are unavailable.*make clients"):
            d.load()
    finally:
        d.load.cache_clear()


# -- the real kubectl -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kubectl_path() -> str:
    found = d.kubectl_candidates()
    if not found:
        pytest.fail("no kubectl binary found (run `make clients`)", pytrace=False)
    return found[0]


def test_gotypes_reads_pointers_omitempty_and_inline_from_kubectl(kubectl_path):
    go = gotypes.read(open(kubectl_path, "rb").read())
    spec = go.structs["k8s.io/api/apps/v1.DeploymentSpec"]
    assert spec[1].pointer and spec[1].json_name == "replicas"        # *int32
    assert not spec[5].pointer and spec[5].omitempty                   # minReadySeconds int32
    assert not go.structs["k8s.io/api/core/v1.Container"][1].omitempty  # name: no omitempty
    assert go.structs["k8s.io/api/core/v1.Volume"][2].inline          # VolumeSource
    assert go.structs["k8s.io/apimachinery/pkg/runtime.RawExtension"][1].skip  # json:"-"
    assert go.named["k8s.io/api/authentication/v1.ExtraValue"] == gotypes.SLICE


def test_gotypes_rejects_non_elf():
    with pytest.raises(gotypes.GoTypesError):
        gotypes.read(b"#!/bin/sh\necho hi\n")


def test_extract_from_kubectl_finds_every_api_group(kubectl_path):
    table = d.extract(kubectl_path)
    assert table.go
    for name in ("k8s.io.api.core.v1.ConfigMap", "k8s.io.api.apps.v1.Deployment",
                 "k8s.io.api.rbac.v1.ClusterRole", "k8s.io.api.policy.v1.Eviction",
                 "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
                 "k8s.io.api.authorization.v1.SelfSubjectAccessReview",
                 "k8s.io.api.autoscaling.v1.Scale", "k8s.io.apimachinery.pkg.runtime.Unknown"):
        assert name in table.messages, name
    # Go's JSON names win where they differ in shape: inline fields and named slices.
    assert "i" in table.messages["k8s.io.api.core.v1.Probe"].fields[1].go
    assert table.messages["k8s.io.apimachinery.pkg.apis.meta.v1.Verbs"].list
