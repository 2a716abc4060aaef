"""The image manager (images/puller.py): pull policy, back-off, reasons, messages, events and
credentials, over a scripted ImageService."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest

from kubeling.kubelet.images import (
    ImageError,
    ImageNeverPull,
    ImageNotFound,
    ImagePullBackOff,
    InvalidImageName,
    PullError,
    Unauthorized,
)
from kubeling.kubelet.images.puller import Backoff, ImageManager, default_pull_policy
from kubeling.kubelet.runtime import Image

POD = {"metadata": {"uid": "uid-1", "name": "p", "namespace": "default"}}


class ScriptedService:
    """Images present by normalised ref; pulls answer from a script (exception or Image)."""

    def __init__(self, present=(), outcomes=None) -> None:
        self.present = {r: Image(id="sha256:" + "1" * 64, size=42) for r in present}
        self.outcomes = list(outcomes or [])
        self.pulls: list[tuple[str, dict | None]] = []

    async def image_status(self, ref):
        return self.present.get(ref)

    async def pull_image(self, ref, auth=None):
        self.pulls.append((ref, auth))
        outcome = self.outcomes.pop(0) if self.outcomes else Image(id="sha256:" + "2" * 64,
                                                                   size=1234)
        if isinstance(outcome, Exception):
            raise outcome
        self.present[ref] = outcome
        return outcome


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _ensure(mgr, image, policy=None, secrets=()):
    events = []
    container = {"name": "c", "image": image}
    if policy:
        container["imagePullPolicy"] = policy
    try:
        result = asyncio.run(mgr.ensure_image(POD, container, list(secrets),
                                              lambda *e: events.append(e)))
    except ImageError as e:  # the test inspects reason and message
        result = e
    return result, events


@pytest.mark.parametrize("image, policy", [
    pytest.param("busybox", "Always", id="no-tag"),
    pytest.param("busybox:latest", "Always", id="latest"),
    pytest.param("busybox:1.36", "IfNotPresent", id="tag"),
    pytest.param("busybox@sha256:" + "a" * 64, "IfNotPresent", id="digest"),
])
def test_default_pull_policy(image, policy):
    assert default_pull_policy(image) == policy


@pytest.mark.parametrize("image, policy, present, pulls, reason", [
    pytest.param("busybox:1", "IfNotPresent", True, 0, None, id="if-not-present-present"),
    pytest.param("busybox:1", "IfNotPresent", False, 1, None, id="if-not-present-absent"),
    pytest.param("busybox:1", "Always", True, 1, None, id="always-pulls"),
    pytest.param("busybox:1", "Never", True, 0, None, id="never-present"),
    pytest.param("busybox:1", "Never", False, 0, "ErrImageNeverPull", id="never-absent"),
    pytest.param("busybox", None, True, 1, None, id="default-always-for-latest"),
    pytest.param("busybox:1", None, True, 0, None, id="default-if-not-present"),
    pytest.param("Busybox", "IfNotPresent", False, 0, "InvalidImageName", id="invalid"),
])
def test_pull_policy(image, policy, present, pulls, reason):
    from kubeling.kubelet.images import reference
    ref = reference.parse_normalized_tagged(image).string() if image != "Busybox" else ""
    svc = ScriptedService(present=[ref] if present else [])
    result, _ = _ensure(ImageManager(svc), image, policy)
    assert len(svc.pulls) == pulls
    if reason is None:
        assert isinstance(result, Image)
    else:
        assert result.reason == reason


def test_messages_and_events():
    svc = ScriptedService(present=["docker.io/library/busybox:1"])
    _, events = _ensure(ImageManager(svc), "busybox:1")
    assert events == [("Normal", "Pulled",
                       'Container image "busybox:1" already present on machine')]

    result, events = _ensure(ImageManager(ScriptedService()), "nope:1", "Never")
    assert isinstance(result, ImageNeverPull)
    assert str(result) == 'Container image "nope:1" is not present with pull policy of Never'
    assert events == [("Warning", "ErrImageNeverPull", str(result))]

    result, events = _ensure(ImageManager(ScriptedService()), "UPPER")
    assert isinstance(result, InvalidImageName)
    assert str(result).startswith('Failed to apply default image tag "UPPER": couldn\'t parse '
                                  'image reference "UPPER": invalid reference format')
    assert events[0][:2] == ("Warning", "InspectFailed")

    clock = Clock()
    result, events = _ensure(ImageManager(ScriptedService(), clock=clock), "busybox:2")
    assert [e[:2] for e in events] == [("Normal", "Pulling"), ("Normal", "Pulled")]
    assert events[0][2] == 'Pulling image "busybox:2"'
    assert events[1][2] == ('Successfully pulled image "busybox:2" in 0ms (0ms including '
                            'waiting). Image size: 1234 bytes.')


def test_back_off_doubles_to_five_minutes_and_resets_on_success():
    clock = Clock()
    err = ImageNotFound('failed to pull and unpack image "docker.io/library/nope:latest": '
                        'not found')
    svc = ScriptedService(outcomes=[err] * 10)
    mgr = ImageManager(svc, backoff=Backoff(clock=clock), clock=clock)
    delays = []
    for _ in range(7):
        result, events = _ensure(mgr, "nope:1", "Always")
        assert result.reason == "ErrImagePull" and str(result) == str(err)
        assert events[-1] == ("Warning", "Failed", f'Failed to pull image "nope:1": {err}')
        delay = mgr.backoff.get("uid-1_nope:1")
        delays.append(delay)
        clock.t += delay - 0.5
        result, events = _ensure(mgr, "nope:1", "Always")
        assert isinstance(result, ImagePullBackOff) and result.reason == "ImagePullBackOff"
        assert str(result) == f'Back-off pulling image "nope:1": ErrImagePull: {err}'
        assert events == [("Normal", "BackOff", 'Back-off pulling image "nope:1"')]
        clock.t += 0.5
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert len(svc.pulls) == 7
    svc.outcomes = []
    result, _ = _ensure(mgr, "nope:1", "Always")
    assert isinstance(result, Image)
    assert mgr.backoff.get("uid-1_nope:1") == 0


def test_back_off_is_forgotten_after_twice_the_maximum():
    clock = Clock()
    b = Backoff(clock=clock)
    for _ in range(4):
        b.next("k")
    assert b.get("k") == 80
    clock.t += 601
    b.next("k")
    assert b.get("k") == 10


def _dockerconfig(auths: dict) -> dict:
    return {"type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(orjson.dumps({"auths": auths})).decode()}}


def test_pull_secrets_are_tried_in_turn():
    denied = Unauthorized("pull access denied")
    svc = ScriptedService(outcomes=[denied])
    secrets = [_dockerconfig({"reg.io/team": {"username": "a", "password": "1"}}),
               _dockerconfig({"reg.io": {"username": "b", "password": "2"},
                              "other.io": {"username": "c", "password": "3"}})]
    result, _ = _ensure(ImageManager(svc), "reg.io/team/app:1", "Always", secrets)
    assert isinstance(result, Image)
    assert [auth["username"] for _, auth in svc.pulls] == ["a", "b"]

    svc = ScriptedService(outcomes=[denied, PullError("second")])
    result, _ = _ensure(ImageManager(svc), "reg.io/team/app:1", "Always", secrets)
    assert str(result) == "second"                         # the last error is reported

    svc = ScriptedService()
    _ensure(ImageManager(svc), "elsewhere.io/app:1", "Always", secrets)
    assert svc.pulls == [("elsewhere.io/app:1", None)]     # no match: anonymous
