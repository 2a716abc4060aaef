"""The legacy server-side rollback (upstream's ``rollback.go``).

``kubectl rollout undo`` is client-side today: it copies an old ReplicaSet's template into the
Deployment, and the controller treats that as any template change (the old ReplicaSet becomes
the new one again, with the next revision; its earlier revision goes to ``revision-history``).
Old clients instead set ``spec.rollbackTo`` (extensions/v1beta1, apps/v1beta1), which apps/v1
keeps as the ``deprecated.deployment.rollback.to`` annotation. That request is carried out
here: revision 0 means the previous one; the template of the ReplicaSet with that revision
(hash label removed) and its annotations are copied to the Deployment and the request is
cleared, with a ``DeploymentRollback`` Event, or a Warning when the revision is unknown
(``DeploymentRollbackRevisionNotFound``) or already current
(``DeploymentRollbackTemplateUnchanged``).
"""

from __future__ import annotations

import copy

from kubeling.client.events import NORMAL, WARNING
from kubeling.controllers.deployment import util
from kubeling.controllers.deployment.sync import (
    get_all_replicasets_and_sync_revision,
    get_rollback_to,
)


async def rollback(dc, d: dict, rss: list[dict]) -> None:
    new, olds = await get_all_replicasets_and_sync_revision(dc, d, rss, create=True)
    all_rss = [rs for rs in (*olds, new) if rs is not None]
    target = get_rollback_to(d)
    if target == 0:
        target = util.last_revision(all_rss)
        if target == 0:
            dc.recorder.event(d, WARNING, util.ROLLBACK_REVISION_NOT_FOUND, "Unable to find last revision.")
            await update_and_clear_rollback_to(dc, d)
            return
    for rs in all_rss:
        try:
            rev = util.revision(rs)
        except ValueError:
            continue
        if rev == target:
            if await rollback_to_template(dc, d, rs):
                dc.recorder.event(d, NORMAL, util.ROLLBACK_DONE,
                                  f'Rolled back deployment "{d["metadata"]["name"]}" to revision {target}')
            return
    dc.recorder.event(d, WARNING, util.ROLLBACK_REVISION_NOT_FOUND, "Unable to find the revision to rollback to.")
    await update_and_clear_rollback_to(dc, d)


async def rollback_to_template(dc, d: dict, rs: dict) -> bool:
    performed = False
    if not util.equal_ignore_hash(d["spec"]["template"], rs["spec"]["template"]):
        d["spec"]["template"] = util.template_without_hash(copy.deepcopy(rs["spec"]["template"]))
        util.set_deployment_annotations_to(d, rs)
        performed = True
    else:
        dc.recorder.event(d, WARNING, util.ROLLBACK_TEMPLATE_UNCHANGED,
                          f'The rollback revision contains the same template as current deployment '
                          f'"{d["metadata"]["name"]}"')
    await update_and_clear_rollback_to(dc, d)
    return performed


async def update_and_clear_rollback_to(dc, d: dict) -> None:
    (d["metadata"].get("annotations") or {}).pop(util.ROLLBACK_TO, None)
    await dc.update_deployment(d)
