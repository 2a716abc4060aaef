"""The API server's size, depth and count limits, in one place, and the pure measures behind them.

Every figure has an upstream counterpart; where kubeling is stricter, the docstring says why.

=============================  ==========  ================================================
name                           value       upstream
=============================  ==========  ================================================
MAX_REQUEST_BODY_BYTES         3 MiB       ``MaxRequestBodyBytes`` (apiserver server config)
MAX_OBJECT_BYTES               1.5 MiB     etcd's default ``--max-request-bytes``
JSON_PATCH_MAX_COPY_BYTES      3 MiB       ``JSONPatchMaxCopyBytes`` → json-patch's
                                           ``AccumulatedCopySizeLimit``
MAX_JSON_PATCH_OPERATIONS      10,000      ``maxJSONPatchOperations`` (handlers/patch.go)
MAX_NESTING_DEPTH              200         10,000 (sigs.k8s.io/json, go-yaml); see below
MAX_DECODED_BYTES              3 MiB       none (see below)
YAML alias ratio               99 %..10 %  go-yaml v2/v3 ``allowedAliasRatio``
MAX_ECHOED_VALUE_CHARS         256         none: field errors echo whole values upstream
MAX_STATUS_MESSAGE_CHARS       64 Ki       none
MAX_STATUS_CAUSES_CHARS        256 Ki      none
WARNING_TOTAL_RUNES            4,096       ``truncateAtTotalRunes`` (filters/warning.go)
WARNING_ITEM_RUNES             256         ``truncateItemRunes`` (filters/warning.go)
MAX_WATCH_TIMEOUT_SECONDS      2**63/1e9   what a Go ``time.Duration`` of seconds can hold
=============================  ==========  ================================================

Why the nesting depth is 200 and not upstream's 10,000: kubeling walks objects with recursive
Python functions (deepcopy, schema checks, merges, field sets, the YAML dumper), which use up to
three interpreter frames per level against a recursion limit of 1,000, and orjson refuses to
encode more than 254 levels. An object of depth D is stored with managedFields whose FieldsV1
mirror it at depth D + 5, and a list or watch event wraps it in two more levels; 200 leaves room
for both. Real objects are far shallower: a Deployment is about 12 levels deep, and the deepest
CustomResourceDefinitions in common charts (whose ``openAPIV3Schema`` spends two levels per
schema level) stay under 80. The depth is checked once, when a body is decoded, so every later
walk over a decoded body may recurse.

Why a decoded-size cap: YAML anchors and aliases let a few hundred bytes stand for gigabytes.
go-yaml bounds the *number* of nodes decoded through aliases relative to the document (its
``allowedAliasRatio``); kubeling also refuses a YAML body that would be larger, written as JSON,
than a JSON body may be, since aliased values are shared in memory but expanded on every encode.

Why error echoes are bounded: an error message that quotes the offending value lets a small
request (a YAML alias, or one value referenced many times) produce a response many megabytes
long. Echoed values are cut to a few hundred characters, and a Status message and its causes
are cut at a fixed size, with a note saying so.
"""

from __future__ import annotations

from typing import Any, Iterable

MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024
MAX_OBJECT_BYTES = 3 * 1024 * 1024 // 2
JSON_PATCH_MAX_COPY_BYTES = 3 * 1024 * 1024
MAX_JSON_PATCH_OPERATIONS = 10000
MAX_NESTING_DEPTH = 200
MAX_DECODED_BYTES = MAX_REQUEST_BODY_BYTES

# go-yaml's alias budget: up to 400,000 decoded nodes, 99 % may come from alias expansion; from
# there the allowance falls linearly to 10 % at 4,000,000 nodes. It only applies once more than
# 100 nodes came through aliases and more than 1,000 nodes were decoded in all.
ALIAS_RATIO_RANGE_LOW = 400_000
ALIAS_RATIO_RANGE_HIGH = 4_000_000
ALIAS_MIN_ALIASED = 100
ALIAS_MIN_DECODED = 1000

MAX_ECHOED_VALUE_CHARS = 256
MAX_STATUS_MESSAGE_CHARS = 64 * 1024
MAX_STATUS_CAUSES_CHARS = 256 * 1024

WARNING_TOTAL_RUNES = 4 * 1024
WARNING_ITEM_RUNES = 256

MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
MAX_UINT64 = 2**64 - 1
MAX_WATCH_TIMEOUT_SECONDS = MAX_INT64 // 1_000_000_000


def allowed_alias_ratio(decoded: int) -> float:
    """The share of ``decoded`` nodes that may come from alias expansion (go-yaml's rule)."""
    if decoded <= ALIAS_RATIO_RANGE_LOW:
        return 0.99
    if decoded >= ALIAS_RATIO_RANGE_HIGH:
        return 0.10
    span = ALIAS_RATIO_RANGE_HIGH - ALIAS_RATIO_RANGE_LOW
    return 0.99 - 0.89 * (decoded - ALIAS_RATIO_RANGE_LOW) / span


def excessive_aliasing(decoded: int, aliased: int) -> bool:
    """Whether go-yaml would stop with "document contains excessive aliasing" at this point."""
    return (aliased > ALIAS_MIN_ALIASED and decoded > ALIAS_MIN_DECODED
            and aliased / decoded > allowed_alias_ratio(decoded))


def depth_exceeds(value: Any, limit: int = MAX_NESTING_DEPTH) -> bool:
    """Whether a JSON value nests more than ``limit`` objects/arrays deep (a scalar is depth 0).

    Iterative, and it stops at the first container beyond the limit, so any value may be passed,
    however deep. Shared subtrees (from YAML aliases) are measured once per parent they hang from.
    """
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        if depth > limit:
            return True
        for c in (v.values() if isinstance(v, dict) else v):
            if isinstance(c, (dict, list)):
                push((c, depth + 1))
    return False


def json_depth_bound(data: bytes) -> int:
    """An upper bound on the nesting depth of the JSON text ``data``: its count of ``{`` and ``[``.

    Cheap (two scans in C); when it is within the limit the decoded value needs no walk.
    """
    return data.count(b"{") + data.count(b"[")


def truncate_warnings(texts: Iterable[str]) -> list[str]:
    """The ``Warning`` header texts upstream's recorder would send for ``texts``, in order.

    Duplicates and empty texts are dropped. While the total stays within WARNING_TOTAL_RUNES every
    text is sent whole; once it would not, every text is cut to WARNING_ITEM_RUNES, and texts stop
    being added once the cut total reaches the limit.
    """
    seen: set[str] = set()
    ordered: list[str] = []
    written, truncating = 0, False
    for text in texts:
        if not text or text in seen:
            continue
        if truncating and written >= WARNING_TOTAL_RUNES:
            break
        seen.add(text)
        ordered.append(text)
        if truncating:
            written += min(len(text), WARNING_ITEM_RUNES)
        elif written + len(text) <= WARNING_TOTAL_RUNES:
            written += len(text)
        else:
            truncating = True
            written = sum(min(len(t), WARNING_ITEM_RUNES) for t in ordered)
    if not truncating:
        return ordered
    return [t[:WARNING_ITEM_RUNES] for t in ordered]
