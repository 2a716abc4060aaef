"""`StatefulPodControl`: the StatefulSet controller's writes to pods and claims (upstream's
``stateful_pod_control.go``), each with upstream's Event on the set:

- ``SuccessfulCreate`` ``create Pod web-0 in StatefulSet web successful`` /
  ``FailedCreate`` ``create Pod web-0 in StatefulSet web failed error: ...`` (also update, delete);
- ``SuccessfulCreate`` ``create Claim www-web-0 Pod web-0 in StatefulSet web success`` /
  ``FailedCreate`` ``create Claim www-web-0 for Pod web-0 in StatefulSet web failed error: ...``.

Claims are created before their pod (a pod whose claim is missing would never start); an
existing claim is left as it is. Claims and pods are read from the informer caches handed in.
"""

from __future__ import annotations

import copy
import logging

from kubeling.client import is_already_exists, is_not_found
from kubeling.client.events import NORMAL, WARNING, EventRecorder
from kubeling.controllers.statefulset import stateful_set_utils as u

log = logging.getLogger(__name__)


def _message(e: Exception) -> str:
    return getattr(e, "message", None) or str(e)


class StatefulPodControl:
    def __init__(self, client, recorder: EventRecorder, claims) -> None:
        """``claims``: the PVC informer (its cache is read; writes go to ``client``)."""
        self.client = client
        self.recorder = recorder
        self.claims = claims

    # -- events --------------------------------------------------------------------------------

    def _pod_event(self, verb: str, sts: dict, pod: dict, err: Exception | None) -> None:
        name, set_name = pod["metadata"]["name"], sts["metadata"]["name"]
        if err is None:
            self.recorder.event(sts, NORMAL, f"Successful{verb.title()}",
                                f"{verb} Pod {name} in StatefulSet {set_name} successful")
        else:
            self.recorder.event(sts, WARNING, f"Failed{verb.title()}",
                                f"{verb} Pod {name} in StatefulSet {set_name} failed error: {_message(err)}")

    def _claim_event(self, verb: str, sts: dict, pod: dict, claim: dict, err: Exception | None) -> None:
        c, p, s = claim["metadata"]["name"], pod["metadata"]["name"], sts["metadata"]["name"]
        if err is None:
            self.recorder.event(sts, NORMAL, f"Successful{verb.title()}",
                                f"{verb} Claim {c} Pod {p} in StatefulSet {s} success")
        else:
            self.recorder.event(sts, WARNING, f"Failed{verb.title()}",
                                f"{verb} Claim {c} for Pod {p} in StatefulSet {s} failed error: {_message(err)}")

    # -- claims --------------------------------------------------------------------------------

    def _cached_claim(self, namespace: str, name: str) -> dict | None:
        return self.claims.get(f"{namespace}/{name}")

    async def create_missing_claims(self, sts: dict, pod: dict) -> None:
        """Create every claim of ``pod`` that does not exist; raises the first failure after trying all."""
        first: Exception | None = None
        for claim in u.persistent_volume_claims(sts, u.get_ordinal(pod)).values():
            ns, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
            if self._cached_claim(ns, name) is not None:
                continue
            claim = u.update_claim_owner_refs(claim, sts, pod)
            try:
                await self.client.create("", "v1", "persistentvolumeclaims", claim, namespace=ns)
            except Exception as e:  # noqa: BLE001 - try every claim, raise the first failure after
                if is_already_exists(e):
                    continue  # the cache was behind: it exists, which is all we need
                self._claim_event("create", sts, pod, claim, e)
                first = first or e
                continue
            self._claim_event("create", sts, pod, claim, None)
        if first is not None:
            raise first

    async def update_claims_for_retention(self, sts: dict, pod: dict) -> None:
        """Make the ownerReferences of ``pod``'s existing claims say what the retention policy wants."""
        for claim in u.persistent_volume_claims(sts, u.get_ordinal(pod)).values():
            have = self._cached_claim(claim["metadata"]["namespace"], claim["metadata"]["name"])
            if have is None or u.claim_owner_up_to_date(have, sts, pod):
                continue
            want = u.update_claim_owner_refs(have, sts, pod)
            patch = {"metadata": {"ownerReferences": want["metadata"].get("ownerReferences"),
                                  "resourceVersion": have["metadata"]["resourceVersion"]}}
            try:
                await self.client.patch("", "v1", "persistentvolumeclaims", have["metadata"]["name"], patch,
                                        namespace=have["metadata"]["namespace"], patch_type="merge")
            except Exception as e:
                if not is_not_found(e):
                    self._claim_event("update", sts, pod, have, e)
                    raise

    # -- pods ----------------------------------------------------------------------------------

    async def create_pod(self, sts: dict, pod: dict) -> dict | None:
        """Claims first, then the pod; None if the pod already exists (the cache was behind)."""
        await self.create_missing_claims(sts, pod)
        try:
            created = await self.client.create("", "v1", "pods", pod, namespace=sts["metadata"].get("namespace"))
        except Exception as e:
            if is_already_exists(e):
                return None
            self._pod_event("create", sts, pod, e)
            raise
        self._pod_event("create", sts, pod, None)
        return created

    async def update_pod(self, sts: dict, pod: dict) -> None:
        """Restore ``pod``'s identity labels and create its missing claims.

        A pod's volumes cannot change after creation, so storage that does not match is only
        repaired on the claims' side (a deleted claim is made again, as upstream's
        ``createMissingPersistentVolumeClaims``); the pod keeps pointing at the claim names.
        """
        await self.create_missing_claims(sts, pod)
        if u.identity_matches(sts, pod):
            return
        want = copy.deepcopy(pod)
        u.update_identity(sts, want)
        try:
            await self.client.update("", "v1", "pods", want, namespace=sts["metadata"].get("namespace"))
        except Exception as e:
            self._pod_event("update", sts, pod, e)
            raise
        self._pod_event("update", sts, pod, None)

    async def delete_pod(self, sts: dict, pod: dict) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete("", "v1", "pods", meta["name"], namespace=meta.get("namespace"),
                                     preconditions={"uid": meta["uid"]} if meta.get("uid") else None)
        except Exception as e:
            if is_not_found(e):
                return
            self._pod_event("delete", sts, pod, e)
            raise
        self._pod_event("delete", sts, pod, None)
