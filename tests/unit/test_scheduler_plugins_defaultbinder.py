import asyncio

from scheduler_plugins_testing import make_pod

from kubeling.client.exceptions import status_error
from kubeling.client.fake import FakeClient
from kubeling.scheduler.framework.interface import Code, CycleState
from kubeling.scheduler.plugins.defaultbinder import DefaultBinder


class _Handle:
    def __init__(self, client):
        self.client = client


def test_bind_posts_a_binding():
    client = FakeClient()
    client.prepend_reactor("create", "pods", lambda action: action.obj)

    async def go():
        return await DefaultBinder(handle=_Handle(client)).bind(CycleState(), make_pod("web", uid="u-1"), "node-2")

    assert asyncio.run(go()) is None
    (action,) = client.filter_actions("create", "pods")
    assert (action.namespace, action.name, action.subresource) == ("default", "web", "binding")
    assert action.obj == {"apiVersion": "v1", "kind": "Binding",
                             "metadata": {"namespace": "default", "name": "web", "uid": "u-1"},
                             "target": {"apiVersion": "v1", "kind": "Node", "name": "node-2"}}


def test_bind_failure_is_an_error_status():
    client = FakeClient()

    def conflict(action):
        raise status_error(409, "Conflict", 'pods "web" is already assigned to node "node-1"')

    client.prepend_reactor("create", "pods", conflict)
    st = asyncio.run(DefaultBinder(handle=_Handle(client)).bind(CycleState(), make_pod("web"), "node-2"))
    assert st.code == Code.ERROR
    assert "already assigned" in st.message()
