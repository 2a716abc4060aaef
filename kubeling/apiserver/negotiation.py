"""Content negotiation: decoding request bodies and choosing the response encoding.

Bodies are JSON, YAML (``application/yaml``) or Kubernetes protobuf (decoded to the same
JSON dict by `kubeling.api.protobuf`); patch bodies are typed by their
Content-Type. Responses are JSON unless the client asks for YAML, a server-side
``Table`` (``as=Table;g=meta.k8s.io;v=v1``) or metadata only
(``as=PartialObjectMetadata``/``PartialObjectMetadataList``). A client that accepts
only protobuf gets 406 NotAcceptable; one that lists protobuf first and JSON after
gets JSON, as kubectl expects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import orjson
import yaml

from kubeling.api import errors, protobuf

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


@dataclass(frozen=True)
class Accept:
    media: str = JSON
    as_kind: str = ""        # "", "Table", "PartialObjectMetadata", "PartialObjectMetadataList", "APIGroupDiscoveryList"
    group: str = ""
    version: str = ""
    raw: str = JSON          # the media type with parameters, echoed in Content-Type


def _params(part: str) -> tuple[str, dict[str, str]]:
    fields = [f.strip() for f in part.split(";")]
    media = fields[0].lower()
    params = {}
    for f in fields[1:]:
        if "=" in f:
            k, v = f.split("=", 1)
            params[k.strip()] = v.strip()
    return media, params


def parse_accept(header: str | None, *, allow_as: tuple[str, ...] = ("Table", "PartialObjectMetadata",
                                                                       "PartialObjectMetadataList")) -> Accept:
    if not header:
        return Accept()
    candidates = [p for p in header.split(",") if p.strip()]
    saw_only_unsupported = True
    for part in candidates:
        media, params = _params(part)
        if media in (JSON, "*/*", "application/*", YAML, "application/json;stream=watch"):
            saw_only_unsupported = False
            as_kind = params.get("as", "")
            if as_kind:
                g, v = params.get("g", ""), params.get("v", "")
                if as_kind in allow_as and (g in ("meta.k8s.io", "apidiscovery.k8s.io")) and v in ("v1", "v1beta1",
                                                                                                  "v2"):
                    return Accept(JSON, as_kind, g, v, part.strip())
                continue  # an `as=` we can't serve: try the next alternative
            if media == YAML:
                return Accept(YAML, raw=YAML)
            return Accept(JSON, raw=JSON)
    if saw_only_unsupported:
        raise errors.not_acceptable(f"only the following media types are accepted: {JSON}, {YAML}")
    return Accept()


_BODY_TYPES = (JSON, YAML, PROTOBUF, "application/apply-patch+yaml", "text/yaml", "application/x-yaml", "*/*",
               *PATCH_TYPES)


def decode_body(data: bytes, content_type: str | None) -> object:
    media = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media not in _BODY_TYPES:
        raise errors.unsupported_media_type((JSON, YAML, PROTOBUF))
    if not data.strip():
        raise errors.bad_request("the body of the request was empty")
    if media == PROTOBUF:
        return protobuf.decode_body(data)
    if media in (YAML, "application/apply-patch+yaml", "text/yaml", "application/x-yaml"):
        try:
            return yaml.load(data, Loader=_Loader)
        except yaml.YAMLError as e:
            raise errors.bad_request(f"error converting YAML to JSON: {_yaml_msg(e)}") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {e}") from None


def may_hold_nulls(data: bytes, content_type: str | None) -> bool:
    """False only when the body certainly decodes without a null anywhere."""
    media = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media == PROTOBUF:
        return False
    if media == JSON:
        return b"null" in data
    return True


def duplicate_fields(data: bytes, content_type: str | None) -> list[str]:
    """Paths of keys given twice in one JSON object (``data``, ``spec.template``), which a strict
    decoder refuses. Only JSON is checked; it costs a second parse, so callers skip it for Ignore."""
    media = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media not in (JSON, "application/merge-patch+json", "application/strategic-merge-patch+json") or \
            data.count(b'"') < 4:
        return []
    if _key_tokens(data) == _count_keys(orjson.loads(data)):
        return []  # as many key tokens as distinct keys: no object repeats one
    found: list[str] = []

    def hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen and k not in found:
                found.append(k)
            seen.add(k)
        return dict(pairs)
    try:
        json.loads(data, object_pairs_hook=hook)
    except ValueError:
        return []
    return found


# Every JSON string, scanned left to right (so a match never starts inside a string); a string
# followed by ":" is an object key.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?')


def _key_tokens(data: bytes) -> int:
    return sum(1 for m in _STRING.finditer(data) if m.group(1))


def _count_keys(value) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_count_keys(v) for v in value.values() if isinstance(v, (dict, list)))
    if isinstance(value, list):
        return sum(_count_keys(v) for v in value if isinstance(v, (dict, list)))
    return 0


def _yaml_msg(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is not None:
        return f"yaml: line {mark.line + 1}: {problem}"
    return f"yaml: {problem}"


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """YAML 1.2-ish scalars: timestamps stay strings (as Go's YAML-to-JSON conversion does)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def dump_json(obj: object) -> bytes:
    return orjson.dumps(obj)


def dump_yaml(obj: object) -> bytes:
    return yaml.dump(obj, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=True,
                     default_flow_style=False, allow_unicode=True).encode()
