"""ReplicationManager: the ReplicaSet controller over ``replicationcontrollers`` (upstream's
``pkg/controller/replication``, which wraps the ReplicaSet controller the same way).

Everything — claiming pods, expectations, slow-start creates, scale-down order, status and the
``ReplicaFailure`` condition — is `ReplicaSetController`'s. What differs is the resource, the
Events' source (``replication-controller``) and the selector: a ReplicationController's
``spec.selector`` is a plain label map (the API server defaults it to the template's labels),
read here as ``matchLabels``.
"""

from __future__ import annotations

from kubeling.controllers.replicaset import ReplicaSetController


class ReplicationManager(ReplicaSetController):
    NAME = "replicationcontroller"
    GROUP = ""
    VERSION = "v1"
    RESOURCE = "replicationcontrollers"
    KIND = "ReplicationController"
    COMPONENT = "replication-controller"

    @staticmethod
    def selector_of(owner: dict) -> dict | None:
        selector = (owner.get("spec") or {}).get("selector")
        return None if selector is None else {"matchLabels": dict(selector)}
