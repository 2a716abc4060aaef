"""The node client certificate auto-approver (upstream ``pkg/controller/certificates/approver``,
``--controllers`` name ``csrapproving``).

A pending ``kubernetes.io/kube-apiserver-client-kubelet`` request shaped as a node client
certificate (CN ``system:node:<name>``, O ``system:nodes``, no SANs, client usages) is approved
when its requestor may, by a SubjectAccessReview for the requestor recorded in the CSR
(``spec.username``/``uid``/``groups``/``extra``):

- ``create`` on ``certificatesigningrequests/selfnodeclient`` (group certificates.k8s.io) when
  the requestor is the node itself (CN = username): a renewal;
- ``create`` on ``certificatesigningrequests/nodeclient``: a new node, e.g. a bootstrap token in
  ``system:bootstrappers`` (bound to upstream's
  ``system:certificates.k8s.io:certificatesigningrequests:nodeclient`` ClusterRole).

Approval appends condition Approved, reason ``AutoApproved``, through ``/approval``. A request
recognised but not allowed is retried with the queue's backoff (upstream's IgnorableError);
anything else is left for a human (``kubectl certificate approve|deny``).
"""

from __future__ import annotations

import copy
import logging

from kubeling.api import certificates as certs
from kubeling.client import is_not_found
from kubeling.controllers.base import Controller, ControllerContext

log = logging.getLogger(__name__)

GROUP, VERSION, RESOURCE = certs.GROUP, "v1", "certificatesigningrequests"
MANAGER = "certificate-controller"


def is_node_client_cert(csr: dict, req) -> bool:
    spec = csr.get("spec") or {}
    if spec.get("signerName") != certs.KUBE_APISERVER_CLIENT_KUBELET:
        return False
    return certs.validate_kubelet_client_csr(req, spec.get("usages") or ()) is None


def is_self_node_client_cert(csr: dict, req) -> bool:
    if (csr.get("spec") or {}).get("username") != certs.common_name(req):
        return False
    return is_node_client_cert(csr, req)


# (recognise, subresource, message), tried in order, as upstream's recognizers()
RECOGNIZERS = (
    (is_self_node_client_cert, "selfnodeclient", "Auto approving self kubelet client certificate after "
                                                 "SubjectAccessReview."),
    (is_node_client_cert, "nodeclient", "Auto approving kubelet client certificate after SubjectAccessReview."),
)


class NotApproved(Exception):
    """Recognised, but the SubjectAccessReview said no (retried with backoff)."""


class CSRApprovingController(Controller):
    NAME = "csrapproving"
    WORKERS = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.csrs = ctx.informers.informer_for(GROUP, VERSION, RESOURCE)
        self.handle(self.csrs, on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new))

    def _enqueue(self, obj: dict) -> None:
        if (obj.get("spec") or {}).get("signerName") == certs.KUBE_APISERVER_CLIENT_KUBELET:
            self.queue.add(obj["metadata"]["name"])

    async def authorize(self, csr: dict, subresource: str) -> bool:
        spec = csr.get("spec") or {}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": spec.get("username", ""), "groups": list(spec.get("groups") or ()),
            "resourceAttributes": {"group": GROUP, "version": "*", "resource": RESOURCE,
                                   "subresource": subresource, "verb": "create"}}}
        if spec.get("uid"):
            review["spec"]["uid"] = spec["uid"]
        if spec.get("extra"):
            review["spec"]["extra"] = copy.deepcopy(spec["extra"])
        out = await self.client.create("authorization.k8s.io", "v1", "subjectaccessreviews", review)
        return bool((out.get("status") or {}).get("allowed"))

    async def sync(self, name: str) -> None:
        csr = self.csrs.get(name)
        if csr is None or (csr.get("status") or {}).get("certificate"):
            return
        approved, denied = certs.approval_state(csr)
        if approved or denied:
            return
        try:
            req = certs.parse_csr(certs.decode_request((csr.get("spec") or {}).get("request") or ""))
        except certs.CSRError as e:
            raise RuntimeError(f'unable to parse csr "{name}": {e}') from None
        tried = []
        for recognize, subresource, message in RECOGNIZERS:
            if not recognize(csr, req):
                continue
            tried.append(subresource)
            if not await self.authorize(csr, subresource):
                continue
            updated = copy.deepcopy(csr)
            updated.setdefault("status", {}).setdefault("conditions", []).append(
                {"type": "Approved", "status": "True", "reason": "AutoApproved", "message": message})
            try:
                await self.client.update(GROUP, VERSION, RESOURCE, updated, subresource="approval",
                                         field_manager=MANAGER)
            except Exception as e:
                if is_not_found(e):
                    return
                raise
            log.info("%s: approved %s (%s)", self.NAME, name, subresource)
            return
        if tried:
            raise NotApproved(f'recognized csr "{name}" as {tried} but subject access review was not approved')
