"""Moved: the node rules and the Node authorizer are `kubeling.apiserver.authorizer.node`."""

from kubeling.apiserver.authorizer.node import NODES_GROUP, READ, RULES, NodeAuthorizer

NodeRulesAuthorizer = NodeAuthorizer  # the old name
__all__ = ["NODES_GROUP", "READ", "RULES", "NodeAuthorizer", "NodeRulesAuthorizer"]
