"""ServiceAccounts (upstream ``pkg/registry/core/serviceaccount``). The ``token`` subresource
(TokenRequest) arrives with access control (issue 9); until then it answers 405."""

from kubeling.api.printers import core as printers
from kubeling.api.validation import core as validation
from kubeling.apiserver.registry.strategy import Strategy


class ServiceAccountStrategy(Strategy):
    group, resource, kind = "", "serviceaccounts", "ServiceAccount"
    printer = printers.SERVICE_ACCOUNT

    def validate(self, obj):
        return validation.validate_service_account(obj)
