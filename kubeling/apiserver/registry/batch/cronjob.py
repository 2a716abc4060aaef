"""CronJobs (upstream ``pkg/registry/batch/cronjob``): status, generation."""

from kubeling.api.defaults import batch as defaults
from kubeling.api.printers import batch as printers
from kubeling.api.validation import batch as validation
from kubeling.apiserver.registry.strategy import WorkloadStrategy
from kubeling.apiserver.registry.subresources import status_subresources


class CronJobStrategy(WorkloadStrategy):
    group, resource, kind = "batch", "cronjobs", "CronJob"
    printer = printers.CRON_JOB
    subresources = status_subresources()

    def defaults(self, obj):
        defaults.set_object_defaults_cron_job(obj)

    def validate(self, obj):
        return validation.validate_cron_job(obj)
