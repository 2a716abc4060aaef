"""OpenAPI v3 value validation of custom resources, worded as upstream's apiextensions.

Most failures are ``Invalid`` with kube-openapi's sentence, which repeats the
path: ``spec.size: Invalid value: 20: spec.size in body should be less than
or equal to 10``. Some map to other kinds as upstream does: ``enum`` ->
NotSupported, ``required`` -> Required, ``maxLength`` -> TooLong, ``maxItems``
-> TooMany, duplicates in ``uniqueItems``/set/map lists -> Duplicate.

A type mismatch stops the checks below that node (nothing else is meaningful).
The root's apiVersion/kind/metadata are not validated here; metadata is
ObjectMeta and is validated as such.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import re
import uuid
from typing import Any, Callable

import orjson

from kubeling.api.errors import FieldError, duplicate, invalid_value, not_supported, required, too_long
from kubeling.api.structural import nodes

_INT_RANGES = {"int32": (-2 ** 31, 2 ** 31 - 1), "int64": (-2 ** 63, 2 ** 63 - 1)}
_DURATION = re.compile(r"^[-+]?([0-9]*(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$|^0$")
_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _num(v: Any) -> str:
    """Numbers as Go prints them: 10, not 10.0."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _datetime(s: str) -> bool:
    try:
        datetime.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
        return "T" in s.upper() or " " in s
    except ValueError:
        return False


def _date(s: str) -> bool:
    try:
        datetime.date.fromisoformat(s)
        return len(s) == 10
    except ValueError:
        return False


def _b64(s: str) -> bool:
    try:
        base64.b64decode(s, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def _parses(fn: Callable[[str], Any]) -> Callable[[str], bool]:
    def ok(s: str) -> bool:
        try:
            fn(s)
            return True
        except ValueError:
            return False
    return ok


STRING_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _datetime,
    "datetime": _datetime,
    "date": _date,
    "byte": _b64,
    "uuid": _parses(uuid.UUID),
    "ipv4": _parses(ipaddress.IPv4Address),
    "ipv6": _parses(ipaddress.IPv6Address),
    "cidr": _parses(lambda s: ipaddress.ip_network(s, strict=False)),
    "hostname": lambda s: bool(_HOSTNAME.match(s)) and len(s) <= 255,
    "email": lambda s: bool(_EMAIL.match(s)),
    "duration": lambda s: bool(_DURATION.match(s)),
}


class _Validator:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def invalid(self, path: str, value: Any, sentence: str) -> None:
        self.errors.append(invalid_value(path, value, f"{path or '<root>'} in body {sentence}"))

    def type_invalid(self, path: str, value: Any, sentence: str) -> None:
        """Upstream reports a wrong JSON type as field.TypeInvalid with the type's name as value."""
        self.errors.append(FieldError("TypeInvalid", path, f"{path or '<root>'} in body {sentence}",
                                      nodes.json_type(value)))

    def run(self, value: Any, node: dict, path: str) -> None:
        if value is None:
            if not nodes.nullable(node) and nodes.type_of(node):
                self.invalid(path, value, f'must be of type {nodes.type_of(node)}: "null"')
            return
        if not self.check_type(value, node, path):
            return
        if "enum" in node and value not in node["enum"]:
            self.errors.append(not_supported(path, value, [v if isinstance(v, str) else
                                                           orjson.dumps(v).decode() for v in node["enum"]]))
        if isinstance(value, str):
            self.string(value, node, path)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.number(value, node, path)
        elif isinstance(value, list):
            self.array(value, node, path)
        elif isinstance(value, dict):
            self.object(value, node, path)
        self.combinators(value, node, path)

    def check_type(self, value: Any, node: dict, path: str) -> bool:
        if node.get("x-kubernetes-int-or-string"):
            if isinstance(value, str) or nodes.matches_type(value, "integer"):
                return True
            self.type_invalid(path, value, f'must be of type integer or string: "{nodes.json_type(value)}"')
            return False
        t = nodes.type_of(node)
        if t and not nodes.matches_type(value, t):
            self.type_invalid(path, value, f'must be of type {t}: "{nodes.json_type(value)}"')
            return False
        return True

    def string(self, value: str, node: dict, path: str) -> None:
        max_len, min_len = node.get("maxLength"), node.get("minLength")
        if max_len is not None and len(value) > max_len:
            self.errors.append(too_long(path, value, max_len))
        if min_len is not None and len(value) < min_len:
            self.invalid(path, value, f"should be at least {min_len} chars long")
        pattern = node.get("pattern")
        if pattern is not None and not re.search(pattern, value):
            self.invalid(path, value, f"should match '{pattern}'")
        fmt = node.get("format")
        check = STRING_FORMATS.get(fmt or "")
        if check is not None and not check(value):
            self.invalid(path, value, f'must be of type {fmt}: "{value}"')

    def number(self, value: float, node: dict, path: str) -> None:
        lo, hi = node.get("minimum"), node.get("maximum")
        if hi is not None:
            if node.get("exclusiveMaximum") and value >= hi:
                self.invalid(path, value, f"should be less than {_num(hi)}")
            elif value > hi:
                self.invalid(path, value, f"should be less than or equal to {_num(hi)}")
        if lo is not None:
            if node.get("exclusiveMinimum") and value <= lo:
                self.invalid(path, value, f"should be greater than {_num(lo)}")
            elif value < lo:
                self.invalid(path, value, f"should be greater than or equal to {_num(lo)}")
        mult = node.get("multipleOf")
        if mult and (value / mult) != int(value / mult):
            self.invalid(path, value, f"should be a multiple of {_num(mult)}")
        rng = _INT_RANGES.get(node.get("format") or "")
        if rng and not rng[0] <= value <= rng[1]:
            self.invalid(path, value, f'must be of type {node["format"]}: "{_num(value)}"')

    def array(self, value: list, node: dict, path: str) -> None:
        max_items, min_items = node.get("maxItems"), node.get("minItems")
        if max_items is not None and len(value) > max_items:
            self.errors.append(FieldError("TooMany", path, f"must have at most {max_items} items", len(value)))
        if min_items is not None and len(value) < min_items:
            self.invalid(path, value, f"should have at least {min_items} items")
        list_type = node.get("x-kubernetes-list-type")
        if node.get("uniqueItems") or list_type == "set":
            seen: list[Any] = []
            for i, item in enumerate(value):
                if item in seen:
                    self.errors.append(duplicate(f"{path}[{i}]", item))
                seen.append(item)
        elif list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            seen_keys: set[bytes] = set()
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                key = {k: item.get(k) for k in keys}
                enc = orjson.dumps(key, option=orjson.OPT_SORT_KEYS)
                if enc in seen_keys:
                    self.errors.append(duplicate(f"{path}[{i}]", key))
                seen_keys.add(enc)
        items = node.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                self.run(item, items, f"{path}[{i}]")

    def object(self, value: dict, node: dict, path: str) -> None:
        for key in node.get("required") or ():
            if key not in value:
                self.errors.append(required(nodes.child_path(path, key), ""))
        max_p, min_p = node.get("maxProperties"), node.get("minProperties")
        if max_p is not None and len(value) > max_p:
            self.invalid(path, value, f"should have at most {max_p} properties")
        if min_p is not None and len(value) < min_p:
            self.invalid(path, value, f"should have at least {min_p} properties")
        props = node.get("properties") or {}
        addl = node.get("additionalProperties")
        for key, v in value.items():
            if key in props:
                self.run(v, props[key], nodes.child_path(path, key))
            elif isinstance(addl, dict):
                self.run(v, addl, nodes.child_path(path, key))

    def combinators(self, value: Any, node: dict, path: str) -> None:
        for sub in node.get("allOf") or ():
            self.run(value, sub, path)
        if node.get("anyOf"):
            results = [_errors(value, s, path) for s in node["anyOf"]]
            if all(results):
                self.invalid(path, value, "must validate at least one schema (anyOf)")
                self.errors += results[0]
        if node.get("oneOf"):
            passing = sum(1 for s in node["oneOf"] if not _errors(value, s, path))
            if passing != 1:
                self.invalid(path, value, "must validate one and only one schema (oneOf)")
        if isinstance(node.get("not"), dict) and not _errors(value, node["not"], path):
            self.invalid(path, value, "must not validate the schema (not)")


def _errors(value: Any, node: dict, path: str) -> list[FieldError]:
    v = _Validator()
    v.run(value, node, path)
    return v.errors


def validate(obj: Any, node: dict | None) -> list[FieldError]:
    """Value validation of a custom resource against its openAPIV3Schema."""
    if not node:
        return []
    if isinstance(obj, dict) and nodes.type_of(node) in (None, "object"):
        # TypeMeta and ObjectMeta are the API server's, not the CRD author's, to validate.
        body = {k: v for k, v in obj.items() if k not in (*nodes.TYPE_META_FIELDS, "metadata")}
        root = dict(node)
        root["properties"] = {k: v for k, v in (node.get("properties") or {}).items()
                              if k not in (*nodes.TYPE_META_FIELDS, "metadata")}
        root["required"] = [k for k in node.get("required") or () if k not in (*nodes.TYPE_META_FIELDS, "metadata")]
        return _errors(body, root, "")
    return _errors(obj, node, "")
