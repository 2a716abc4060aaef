"""Content negotiation: decoding request bodies and choosing the response encoding.

Bodies are JSON, YAML (``application/yaml``) or Kubernetes protobuf (decoded to the same
JSON dict by `kubeling.api.protobuf`); patch bodies are typed by their
Content-Type. Responses are JSON unless the client asks for YAML, a server-side
``Table`` (``as=Table;g=meta.k8s.io;v=v1``) or metadata only
(``as=PartialObjectMetadata``/``PartialObjectMetadataList``). A client that accepts
only protobuf gets 406 NotAcceptable; one that lists protobuf first and JSON after
gets JSON, as kubectl expects.

Decoding is bounded (figures in `kubeling.api.limits`): `decode_body` refuses, with 400, a body
nested deeper than ``MAX_NESTING_DEPTH`` and a YAML body whose anchors and aliases expand more than
go-yaml allows or beyond what a JSON body may hold. Every body the server works on passes through
it, so later walks over a decoded body (schema checks, merges, field sets, error messages) may
recurse. Query parameters that upstream decodes as Go integers are parsed here too, with
upstream's messages (`int64_param`, `list_limit`, `watch_timeout`, `resource_version`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import orjson
import yaml

from kubeling.api import errors, limits, protobuf

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
    """Decode a request body by its Content-Type; 415 for an unknown type, 400 for a malformed,
    too deeply nested or too aliased one. The result nests at most ``MAX_NESTING_DEPTH`` deep."""
    media = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media not in _BODY_TYPES:
        raise errors.unsupported_media_type((JSON, YAML, PROTOBUF))
    if not data.strip():
        raise errors.bad_request("the body of the request was empty")
    if media == PROTOBUF:
        try:
            obj = protobuf.decode_body(data)
        except RecursionError:
            raise _too_deep("json") from None
        if len(data) > limits.MAX_NESTING_DEPTH and limits.depth_exceeds(obj):
            raise _too_deep("json")
        return obj
    if media in _YAML_TYPES:
        return _decode_yaml(data)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {e}") from None
    if limits.json_depth_bound(data) > limits.MAX_NESTING_DEPTH and limits.depth_exceeds(obj):
        raise _too_deep("json")
    return obj


_YAML_TYPES = (YAML, "application/apply-patch+yaml", "text/yaml", "application/x-yaml")


def _too_deep(syntax: str) -> errors.StatusError:
    if syntax == "yaml":
        return _yaml_error(f"yaml: exceeded max depth of {limits.MAX_NESTING_DEPTH}")
    return errors.bad_request(f"couldn't get version/kind; json parse error: exceeded max depth of "
                              f"{limits.MAX_NESTING_DEPTH}")


def _yaml_error(message: str) -> errors.StatusError:
    return errors.bad_request(f"error converting YAML to JSON: {message}")


def _decode_yaml(data: bytes) -> object:
    """YAML with libyaml's composer (C), measured before anything is built from it.

    Without an alias (no ``*`` anywhere) the document is a tree no bigger than the body: it is
    built directly, and walked for depth only when it has enough indicators to be deep. With one,
    the composed node graph is measured first (`_measure`), without expanding the aliases.
    """
    loader = _Loader(data)
    try:
        if b"*" not in data:
            obj = loader.get_single_data()
            if _yaml_depth_bound(data) > limits.MAX_NESTING_DEPTH and limits.depth_exceeds(obj):
                raise _too_deep("yaml")
            return obj
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise _yaml_error(_yaml_msg(e)) from None
    finally:
        loader.dispose()


def _yaml_depth_bound(data: bytes) -> int:
    """An upper bound on a YAML document's nesting: every collection needs one of these indicators."""
    return sum(data.count(c) for c in (b":", b"-", b"[", b"{", b"?"))


def _measure(root: yaml.Node) -> None:
    """Walk a composed YAML node graph once, as go-yaml's decoder would count it, and raise a 400
    when it nests too deep, loops (an anchor inside its own value), aliases too much (go-yaml's
    ratio) or would be larger than a JSON body may be.

    Aliases are the same node object reached again; each node's expanded size (nodes, estimated
    JSON bytes, height) is memoized when its walk ends, so an alias costs one step however large
    its anchor is. Iterative: a node graph may be deeper than the interpreter's stack.
    """
    memo: dict[int, tuple[int, int, int]] = {}
    decoded = aliased = size = 0
    # Frames: [node, container depth, pending children (reversed), nodes, bytes, height].
    stack: list[list] = []

    def visit(node: yaml.Node, depth: int) -> tuple[int, int, int] | None:
        """Account for one occurrence of ``node``; a finished measure, or None once it is pushed."""
        nonlocal decoded, aliased, size
        seen = memo.get(id(node))
        if seen is not None:  # an alias: its whole expansion is decoded again
            nodes, nbytes, height = seen
            decoded += nodes + 1
            aliased += nodes
            size += nbytes
            if depth + height > limits.MAX_NESTING_DEPTH:
                raise _too_deep("yaml")
            if limits.excessive_aliasing(decoded, aliased) or size > limits.MAX_DECODED_BYTES:
                raise _yaml_error("yaml: document contains excessive aliasing")
            return nodes + 1, nbytes, height
        decoded += 1
        if isinstance(node, yaml.ScalarNode):
            measured = (1, len(node.value) + 3, 0)
            size += measured[1]
            memo[id(node)] = measured
            return measured
        if depth + 1 > limits.MAX_NESTING_DEPTH:
            raise _too_deep("yaml")
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in reversed(node.value) for n in reversed(pair)]
        else:
            children = list(reversed(node.value))
        size += 2
        memo[id(node)] = _OPEN
        stack.append([node, depth + 1, children, 1, 2, 1])
        return None

    visit(root, 0)
    while stack:
        frame = stack[-1]
        node, depth, pending = frame[0], frame[1], frame[2]
        if pending:
            child = pending.pop()
            if memo.get(id(child)) is _OPEN:
                raise _yaml_error("yaml: an anchor's value contains itself")
            done = visit(child, depth)
            if done is not None:
                _add(frame, done)
            continue
        stack.pop()
        measured = (frame[3], frame[4], frame[5])
        memo[id(node)] = measured
        if stack:
            _add(stack[-1], measured)


_OPEN = (-1, -1, -1)  # a node whose walk has started and not ended


def _add(frame: list, child: tuple[int, int, int]) -> None:
    frame[3] += child[0]
    frame[4] += child[1]
    frame[5] = max(frame[5], child[2] + 1)


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
    decoder refuses. Only JSON is checked; it costs a second parse, so callers skip it for Ignore.
    A body that does not decode (or nests too deep) has no duplicates to report: `decode_body`
    refuses it."""
    media = (content_type or JSON).split(";", 1)[0].strip().lower()
    if media not in (JSON, "application/merge-patch+json", "application/strategic-merge-patch+json") or \
            data.count(b'"') < 4:
        return []
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    if limits.json_depth_bound(data) > limits.MAX_NESTING_DEPTH and limits.depth_exceeds(decoded):
        return []  # the hook parse below recurses per level
    if _key_tokens(data) == _count_keys(decoded):
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
    except (ValueError, RecursionError):
        return []
    return found


# Every JSON string, scanned left to right (so a match never starts inside a string); a string
# followed by ":" is an object key.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?')


def _key_tokens(data: bytes) -> int:
    return sum(1 for m in _STRING.finditer(data) if m.group(1))


def _count_keys(value) -> int:
    """Keys of every object inside ``value`` (iterative: any depth)."""
    count, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            count += len(v)
            stack.extend(c for c in v.values() if isinstance(c, (dict, list)))
        elif isinstance(v, list):
            stack.extend(c for c in v if isinstance(c, (dict, list)))
    return count


# -- query parameters upstream decodes as Go integers ------------------------------------------------

_INT = re.compile(r"[+-]?[0-9]+")
_UINT = re.compile(r"[0-9]+")


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _go_quote(s: str) -> str:
    """Roughly Go's ``strconv.Quote``: printable text kept, the rest escaped."""
    out = []
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 0x7f else f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _parse_go_int(raw: str, signed: bool) -> int:
    """Go's ``strconv.ParseInt(raw, 10, 64)`` / ``ParseUint``; ValueError with Go's message."""
    func = "ParseInt" if signed else "ParseUint"
    if not (_INT if signed else _UINT).fullmatch(raw) or not raw.isascii():
        raise ValueError(f"strconv.{func}: parsing {_go_quote(raw)}: invalid syntax")
    value = int(raw)
    low, high = (limits.MIN_INT64, limits.MAX_INT64) if signed else (0, limits.MAX_UINT64)
    if not low <= value <= high:
        raise ValueError(f"strconv.{func}: parsing {_go_quote(raw)}: value out of range")
    return value


def int64_param(raw: str) -> int:
    """A query parameter that upstream declares ``int64`` (``limit``, ``timeoutSeconds``,
    ``gracePeriodSeconds``): 400 BadRequest with strconv's message for anything Go refuses
    (``nan``, ``inf``, ``1e308``, ``1.5``, beyond 64 bits), as the parameter codec answers."""
    try:
        return _parse_go_int(raw, signed=True)
    except ValueError as e:
        raise errors.bad_request(str(e)) from None


def list_limit(raw: str | None) -> int:
    """``limit`` of a list: 0 (no limit) when absent or not positive; any int64 is accepted, and
    one larger than the collection simply returns it all (callers must not do arithmetic on it in
    SQLite without clamping)."""
    if raw is None:
        return 0
    return max(int64_param(raw), 0)


def watch_timeout(raw: str | None, default: float) -> float:
    """Seconds a watch may stay open for ``timeoutSeconds``: ``default`` when absent or 0 (upstream
    then picks its own), 0 when negative (the watch ends at once, as a negative Go duration does),
    at most what a Go duration holds. Non-integers are 400 BadRequest."""
    if raw is None:
        return default
    seconds = int64_param(raw)
    if seconds == 0:
        return default
    return float(min(max(seconds, 0), limits.MAX_WATCH_TIMEOUT_SECONDS))


def resource_version(raw: str, *, watch: bool = False, resource: str = "", group: str = "") -> int:
    """A ``resourceVersion`` query parameter as upstream's storage versioner parses it (uint64;
    "" and "0" are 0). A bad one is a 400 "invalid resource version" for get and list, and a 422
    Invalid on the field ``resourceVersion`` for watch (upstream's InterpretWatchError)."""
    if raw in ("", "0"):
        return 0
    try:
        return _parse_go_int(raw, signed=False)
    except ValueError as e:
        err = errors.invalid_value("resourceVersion", raw, str(e))
    if watch:
        raise errors.invalid(resource, group, "", [err])
    raise errors.bad_request(f"invalid resource version: {err}")


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


def dump_yaml(obj: object) -> bytes:
    return yaml.dump(obj, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=True,
                     default_flow_style=False, allow_unicode=True).encode()
