"""Discovery from the client side: which resources the server serves, and how to name them.

`discover(client)` reads ``/api/v1`` and every preferred ``/apis/<group>/<version>`` and returns
`APIResource` values for the top-level resources (no subresources). `RESTMapper` answers
"which resource is kind K of group G" for ownerReferences (apiVersion + kind).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True)
class APIResource:
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


async def _resource_list(client, gv: str) -> list[APIResource]:
    path = f"/api/{gv}" if "/" not in gv else f"/apis/{gv}"
    doc = await client.request("GET", path)
    group, _, version = gv.rpartition("/")
    out = []
    for r in doc.get("resources", []):
        if "/" in r["name"]:
            continue
        out.append(APIResource(group, version, r["name"], r["kind"], r["namespaced"], tuple(r.get("verbs", []))))
    return out


async def discover(client, *, all_versions: bool = False) -> list[APIResource]:
    groups = await client.request("GET", "/apis")
    gvs = ["v1"]
    for g in groups.get("groups", []):
        if all_versions:
            gvs += [v["groupVersion"] for v in g.get("versions", [])]
        else:
            gvs.append(g["preferredVersion"]["groupVersion"])
    lists = await asyncio.gather(*(_resource_list(client, gv) for gv in gvs), return_exceptions=True)
    out: list[APIResource] = []
    for item in lists:
        if isinstance(item, list):
            out.extend(item)
    return out


class RESTMapper:
    def __init__(self, resources: list[APIResource]) -> None:
        self.by_group_kind = {(r.group, r.kind): r for r in resources}

    def for_api_version_kind(self, api_version: str, kind: str) -> APIResource | None:
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        return self.by_group_kind.get((group, kind))
