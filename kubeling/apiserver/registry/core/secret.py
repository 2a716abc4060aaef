"""Secrets (upstream ``pkg/registry/core/secret``).

``stringData`` is write-only: on the way to storage its keys are merged into ``data``,
base64-encoded, and it is never stored (upstream's v1 → internal conversion)."""

import base64

from kubeling.api import fields
from kubeling.api.defaults import core as defaults
from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver.registry.strategy import Strategy


class SecretStrategy(Strategy):
    group, resource, kind = "", "secrets", "Secret"
    printer = printers.SECRET
    field_set = fields.SECRET

    def defaults(self, obj):
        defaults.set_object_defaults_secret(obj)

    def validate(self, obj):
        return validation.validate_secret(obj)

    def validate_update(self, obj, old):
        return validation.validate_secret_update(obj, old)

    def to_storage(self, obj, served):
        if "stringData" in obj:
            string_data = obj.pop("stringData") or {}
            if isinstance(string_data, dict):
                data = obj.get("data") or {}
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
                obj["data"] = data
        return obj
