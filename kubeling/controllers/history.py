"""ControllerRevisions: the template history of DaemonSets and StatefulSets (upstream's
``pkg/controller/history``).

A ControllerRevision is an immutable snapshot of what an owner's pods should look like. Its
``data`` is a strategic merge patch that puts the snapshot back on the owner
(``{"spec": {"template": {..., "$patch": "replace"}}}``); kubectl's client-side
``rollout undo``/``rollout history`` for DaemonSets and StatefulSets read it, which is why the
shape is upstream's exactly.

Contracts:

- `hash_revision`: FNV-1a 32 of the revision's canonical ``data`` (plus the collision count),
  in the no-vowel alphabet (`controller_utils.compute_hash`). Stable across processes, so a
  restarted controller finds its revisions again.
- `revision_name`: ``<owner>-<hash>``, the owner's name cut so the whole fits 253 characters.
- `new_controller_revision`: labels are the template's labels plus ``controller-revision-hash``,
  owned (controller reference) by the owner; ``revision`` is the ordinal kubectl lists.
- `create_controller_revision`: creates; on AlreadyExists with *equal* data it returns the
  existing object (a lost race with ourselves); with different data (a hash collision) it bumps
  the owner's collision count and retries — the caller persists the new count in its status.
- `sort_revisions`: by ``revision``, then creation time, then name (oldest first).
- `find_equal_revisions`: the revisions whose ``data`` equals the needle's.
- `truncate_history`: deletes the oldest non-live revisions beyond ``revisionHistoryLimit``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import orjson

from kubeling.client import is_already_exists, is_not_found
from kubeling.controllers.controller_utils import controller_ref, fnv32a, safe_encode

CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"
MAX_NAME_LENGTH = 253
GROUP, VERSION, RESOURCE = "apps", "v1", "controllerrevisions"


def template_patch(owner: dict) -> dict:
    """The revision data of a DaemonSet or StatefulSet: its pod template as a replacing patch."""
    template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def apply_revision(owner: dict, revision: dict) -> dict:
    """``owner`` with its template put back from ``revision`` (upstream's ``ApplyRevision``).

    Every revision this package writes replaces the whole template, so applying it is
    replacing ``spec.template``; a revision of another shape is applied as a merge of its spec.
    """
    out = copy.deepcopy(owner)
    data = (revision.get("data") or {}).get("spec") or {}
    spec = out.setdefault("spec", {})
    for key, value in data.items():
        if key == "template" and isinstance(value, dict):
            value = {k: copy.deepcopy(v) for k, v in value.items() if k != "$patch"}
        spec[key] = copy.deepcopy(value)
    return out


def hash_revision(revision: dict, collision_count: int | None = None) -> str:
    data = orjson.dumps(revision.get("data"), option=orjson.OPT_SORT_KEYS)
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def revision_name(prefix: str, hash_: str) -> str:
    cut = MAX_NAME_LENGTH - len(hash_) - 1
    return f"{prefix[:cut]}-{hash_}"


def new_controller_revision(owner: dict, template_labels: dict | None, data: dict, revision: int,
                            collision_count: int | None) -> dict:
    """An unsaved ControllerRevision of ``owner`` (upstream's ``NewControllerRevision``)."""
    labels = dict(template_labels or {})
    cr = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
          "metadata": {"namespace": owner["metadata"].get("namespace"), "labels": labels,
                       "ownerReferences": [controller_ref(owner)]},
          "data": copy.deepcopy(data), "revision": revision}
    h = hash_revision(cr, collision_count)
    cr["metadata"]["name"] = revision_name(owner["metadata"]["name"], h)
    labels[CONTROLLER_REVISION_HASH_LABEL] = h
    return cr


def equal_revision(a: dict | None, b: dict | None) -> bool:
    """Same data (upstream compares the hash label first; data equality decides)."""
    if a is None or b is None:
        return a is b
    return orjson.dumps(a.get("data"), option=orjson.OPT_SORT_KEYS) == \
        orjson.dumps(b.get("data"), option=orjson.OPT_SORT_KEYS)


def find_equal_revisions(revisions: Iterable[dict], needle: dict) -> list[dict]:
    return [r for r in revisions if equal_revision(r, needle)]


def sort_revisions(revisions: Iterable[dict]) -> list[dict]:
    return sorted(revisions, key=lambda r: (r.get("revision", 0), r["metadata"].get("creationTimestamp") or "",
                                            r["metadata"]["name"]))


def next_revision(sorted_revisions: list[dict]) -> int:
    return sorted_revisions[-1].get("revision", 0) + 1 if sorted_revisions else 1


async def create_controller_revision(client, owner: dict, revision: dict, collision_count: int) -> tuple[dict, int]:
    """Create ``revision`` for ``owner``; returns (the stored revision, the collision count used).

    See the module docstring for the collision handling.
    """
    ns = owner["metadata"].get("namespace")
    count = collision_count
    while True:
        clone = copy.deepcopy(revision)
        h = hash_revision(clone, count)
        clone["metadata"]["name"] = revision_name(owner["metadata"]["name"], h)
        clone["metadata"].setdefault("labels", {})[CONTROLLER_REVISION_HASH_LABEL] = h
        try:
            return await client.create(GROUP, VERSION, RESOURCE, clone, namespace=ns), count
        except Exception as e:
            if not is_already_exists(e):
                raise
        existing = await client.get(GROUP, VERSION, RESOURCE, clone["metadata"]["name"], namespace=ns)
        if equal_revision(existing, clone):
            return existing, count
        count += 1


async def update_revision_number(client, revision: dict, number: int) -> dict:
    """Give an existing revision a new ``revision`` number (a rollback to it makes it newest)."""
    if revision.get("revision") == number:
        return revision
    clone = copy.deepcopy(revision)
    clone["revision"] = number
    return await client.update(GROUP, VERSION, RESOURCE, clone, namespace=revision["metadata"].get("namespace"))


async def delete_revision(client, revision: dict) -> None:
    meta = revision["metadata"]
    try:
        await client.delete(GROUP, VERSION, RESOURCE, meta["name"], namespace=meta.get("namespace"),
                            preconditions={"uid": meta["uid"]} if meta.get("uid") else None)
    except Exception as e:
        if not is_not_found(e):
            raise


async def truncate_history(client, revisions: Iterable[dict], live: set[str], limit: int | None) -> list[str]:
    """Delete the oldest revisions not named in ``live`` beyond ``limit``; returns the names deleted."""
    limit = 10 if limit is None else max(limit, 0)
    candidates = [r for r in sort_revisions(revisions) if r["metadata"]["name"] not in live]
    excess = len(candidates) - limit
    deleted = []
    for r in candidates[:max(excess, 0)]:
        await delete_revision(client, r)
        deleted.append(r["metadata"]["name"])
    return deleted
