"""Jobs (upstream ``pkg/registry/batch/job``): status, generation, and a generated selector.

Unless ``spec.manualSelector``, a new Job's pods are labelled with its uid and name
(``batch.kubernetes.io/controller-uid``, ``batch.kubernetes.io/job-name`` and the legacy
``controller-uid``/``job-name``), and its selector matches the uid (upstream's generateSelector).
"""

from kubeling.api import fields
from kubeling.api.defaults import batch as defaults
from kubeling.api.printers import batch as printers
from kubeling.api.validation import batch as validation
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


class JobStrategy(WorkloadStrategy):
    group, resource, kind = "batch", "jobs", "Job"
    printer = printers.JOB
    field_set = fields.JOB
    subresources = status_subresources()

    def defaults(self, obj):
        defaults.set_object_defaults_job(obj)

    def validate(self, obj):
        return validation.validate_job(obj)

    def validate_update(self, obj, old):
        return validation.validate_job_update(obj, old)

    def prepare_for_create(self, obj):
        super().prepare_for_create(obj)
        spec = obj.setdefault("spec", {})
        if spec.get("manualSelector"):
            return
        uid = obj["metadata"]["uid"]
        name = obj["metadata"].get("name", "")
        selector_labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                           "controller-uid": uid, "job-name": name}
        tlabels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        for k, v in selector_labels.items():
            tlabels.setdefault(k, v)
        if not spec.get("selector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
