"""Stored objects as bytes: JSON without ``metadata.resourceVersion``, which is the store's
``mod_revision`` and is set when an object is read."""

from __future__ import annotations

import orjson

from kubeling.storage.interface import KeyValue


def decode(kv: KeyValue) -> dict:
    obj = orjson.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


def encode(obj: dict) -> bytes:
    meta = obj.get("metadata", {})
    rv = meta.pop("resourceVersion", None)
    try:
        return orjson.dumps(obj)
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv
