"""discovery.k8s.io/v1 defaulting: ``pkg/apis/discovery/v1/defaults.go``.

Every EndpointSlice port gets a name ("" when unnamed) and a protocol (TCP), so
that consumers can match ports by name without special-casing null.
"""

from __future__ import annotations

from kubeling.api.defaults._util import dicts, set_ptr


def set_object_defaults_endpoint_slice(obj: dict) -> None:
    for port in dicts(obj, "ports"):
        set_ptr(port, "name", "")
        set_ptr(port, "protocol", "TCP")


DEFAULTERS = {
    ("discovery.k8s.io", "v1", "EndpointSlice"): set_object_defaults_endpoint_slice,
}
