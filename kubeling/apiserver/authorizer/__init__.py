"""Authorization: one module per authorizer, composed into an explicit chain as upstream's
``--authorization-mode`` does (``kubeling server --authorization-mode=Node,RBAC``, the default).

==============  ====================================================================================
module          authorizer
==============  ====================================================================================
``privileged``  ``system:masters`` may do anything; always first, whatever the modes (upstream's
                privileged group)
``node``        mode ``Node``: the Node authorizer (``system:node:<name>``), its graph of what a
                node's pods use, and the static ``system:node`` rules
``builtin``     part of mode ``RBAC``: the public-info, basic-user and discovery grants that
                upstream's bootstrap roles carry, answered before RBAC's cache is read
``rbac``        mode ``RBAC`` (`kubeling.apiserver.rbac`): Roles, ClusterRoles and their bindings
``always``      modes ``AlwaysAllow`` and ``AlwaysDeny``
``union``       the chain: the first authorizer that allows or denies decides; no opinion from all
                is a refusal, with every authorizer's reason
==============  ====================================================================================

`build(modes, rbac=..., graph=...)` makes the chain; `parse_modes` checks a flag's value.
"""

from __future__ import annotations

from kubeling.apiserver.authorizer.always import AlwaysAllowAuthorizer, AlwaysDenyAuthorizer
from kubeling.apiserver.authorizer.builtin import BasicUserAuthorizer, PublicInfoAuthorizer
from kubeling.apiserver.authorizer.node import Graph, NodeAuthorizer, graph_for
from kubeling.apiserver.authorizer.privileged import MastersAuthorizer
from kubeling.apiserver.authorizer.union import ChainAuthorizer

MODES = ("AlwaysAllow", "AlwaysDeny", "Node", "RBAC")
DEFAULT_MODES = ("Node", "RBAC")

__all__ = ["AlwaysAllowAuthorizer", "AlwaysDenyAuthorizer", "BasicUserAuthorizer", "ChainAuthorizer",
           "DEFAULT_MODES", "Graph", "MODES", "MastersAuthorizer", "NodeAuthorizer", "PublicInfoAuthorizer",
           "build", "graph_for", "name_from_field_selector", "parse_modes"]


def parse_modes(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"Node,RBAC"`` -> ("Node", "RBAC"); ValueError naming an unknown or repeated mode, as
    upstream's ``--authorization-mode`` validation."""
    items = [m.strip() for m in (value.split(",") if isinstance(value, str) else value)]
    items = [m for m in items if m]
    if not items:
        raise ValueError("at least one authorization-mode must be passed")
    seen = set()
    for m in items:
        if m not in MODES:
            raise ValueError(f"authorization-mode {m!r} is not a valid mode (one of {', '.join(MODES)})")
        if m in seen:
            raise ValueError(f"authorization-mode {m!r} has mode specified more than once")
        seen.add(m)
    return tuple(items)


def build(modes=DEFAULT_MODES, *, rbac=None, graph=None) -> ChainAuthorizer:
    """The chain for ``modes`` (in their order), after the privileged group. ``rbac`` is the
    `kubeling.apiserver.rbac.RBACAuthorizer` (mode RBAC without one keeps only the built-in
    grants); ``graph`` the Node authorizer's `Graph` (none: no object is related, fail closed)."""
    chain: list = [MastersAuthorizer()]
    for mode in parse_modes(modes):
        if mode == "AlwaysAllow":
            chain.append(AlwaysAllowAuthorizer())
        elif mode == "AlwaysDeny":
            chain.append(AlwaysDenyAuthorizer())
        elif mode == "Node":
            chain.append(NodeAuthorizer(graph))
        elif mode == "RBAC":
            chain += [PublicInfoAuthorizer(), BasicUserAuthorizer()]
            if rbac is not None:
                chain.append(rbac)
    return ChainAuthorizer(chain)


def name_from_field_selector(verb: str, query) -> str:
    """The name a ``list``/``watch`` asks for with ``fieldSelector=metadata.name=<n>`` (or
    ``==``), which upstream's RequestInfo takes as the request's name so that a grant on one
    object (RBAC ``resourceNames``, the Node authorizer) covers watching it; "" otherwise."""
    if verb not in ("list", "watch"):
        return ""
    selector = query.get("fieldSelector", "") if query is not None else ""
    if not selector or "," in selector:
        return ""
    key, op, value = selector.partition("==")
    if not op:
        key, op, value = selector.partition("=")
    if not op or key.strip() != "metadata.name" or value.startswith("="):
        return ""
    return value.strip()
