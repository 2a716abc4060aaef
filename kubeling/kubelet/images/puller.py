"""The image manager (upstream's ``pkg/kubelet/images``): makes sure a container's image is on
the node before the container is created.

`ImageManager.ensure_image(pod, container, pull_secrets)` returns the `runtime.Image` or raises
an `images.ImageError` whose ``reason`` and ``str()`` are what upstream puts in the container's
``state.waiting``:

    reference does not parse          -> InvalidImageName   (event Warning InspectFailed)
    present, and policy is not Always -> the image          (event Normal Pulled "... already
                                                              present on machine")
    absent, policy Never              -> ErrImageNeverPull  (event Warning ErrImageNeverPull)
    a pull failed less than the
      back-off ago                    -> ImagePullBackOff   (event Normal BackOff; the status
                                                              message adds the last pull error:
                                                              'Back-off pulling image "x":
                                                              ErrImagePull: <error>')
    pull fails                        -> ErrImagePull       (event Warning Failed)
    pull succeeds                     -> the image          (events Normal Pulling, Pulled)

Policy defaulting is upstream's (``defaults.apply_defaults`` normally did it already): Always
when the image has no tag or the tag ``latest`` and no digest, IfNotPresent otherwise.

Back-off is per (pod UID, image), as upstream's ``flowcontrol.Backoff``: after a failure the
next pull waits 10 s, doubling to 5 min; an entry idle for twice the maximum is forgotten, and a
success clears it. The clock is injectable.

Credentials: the pod's ``imagePullSecrets`` (the secret objects, already read by the caller)
make a `credentials.Keyring`; the matching entries are tried in order until one pull succeeds
(the last error is the one reported). When no entry matches, the pull goes without credentials,
which lets ``registries.yaml`` credentials or an open registry serve, as upstream's puller does.

Events belong to the caller: ``recorder(event_type, reason, message)`` is called with upstream's
wording; the kubelet turns it into an Event on the pod's container reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kubeling.kubelet.images import (
    ImageNeverPull,
    ImagePullBackOff,
    InvalidImageName,
    PullError,
    reference,
)
from kubeling.kubelet.images.credentials import Keyring
from kubeling.kubelet.runtime import Image, ImageService

PULL_ALWAYS = "Always"
PULL_IF_NOT_PRESENT = "IfNotPresent"
PULL_NEVER = "Never"

Recorder = Callable[[str, str, str], None]


def default_pull_policy(image: str) -> str:
    """Upstream's defaulting: Always for ``:latest`` or no tag (and no digest)."""
    try:
        ref = reference.parse(image)
    except InvalidImageName:
        return PULL_IF_NOT_PRESENT
    if ref.digest:
        return PULL_IF_NOT_PRESENT
    return PULL_ALWAYS if ref.tag in ("", reference.DEFAULT_TAG) else PULL_IF_NOT_PRESENT


@dataclass
class _Entry:
    backoff: float
    last_update: float


class Backoff:
    """Upstream's ``flowcontrol.Backoff`` for one kind of key: initial, doubling, capped."""

    def __init__(self, initial: float = 10.0, maximum: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.initial, self.maximum, self.clock = initial, maximum, clock
        self._entries: dict[str, _Entry] = {}

    def _expired(self, e: _Entry, now: float) -> bool:
        return now - e.last_update > 2 * self.maximum

    def next(self, key: str) -> None:
        """Record a failure: start at ``initial``, or double the current delay (to the cap)."""
        now = self.clock()
        e = self._entries.get(key)
        if e is None or self._expired(e, now):
            self._entries[key] = _Entry(self.initial, now)
        else:
            e.backoff = min(e.backoff * 2, self.maximum)
            e.last_update = now

    def in_backoff(self, key: str) -> bool:
        """True while less than the current delay has passed since the last failure."""
        e = self._entries.get(key)
        return e is not None and self.clock() - e.last_update < e.backoff

    def get(self, key: str) -> float:
        e = self._entries.get(key)
        return e.backoff if e is not None else 0.0

    def remaining(self, key: str) -> float:
        """Seconds left of the current delay (0 when not in back-off)."""
        e = self._entries.get(key)
        return max(0.0, e.last_update + e.backoff - self.clock()) if e is not None else 0.0

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def gc(self) -> None:
        now = self.clock()
        for key in [k for k, e in self._entries.items() if self._expired(e, now)]:
            del self._entries[key]


def _seconds(d: float) -> str:
    """A duration roughly as Go prints it (``1.234s``, ``850ms``)."""
    if d < 1:
        return f"{d * 1000:.0f}ms"
    if d < 60:
        return f"{d:.3g}s" if d < 10 else f"{d:.4g}s"
    m, s = divmod(d, 60)
    return f"{int(m)}m{s:.3g}s"


class ImageManager:
    """See the module docstring. One per node; safe for concurrent pods (asyncio)."""

    def __init__(self, service: ImageService, *, backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.backoff = backoff or Backoff(clock=clock)
        self.clock = clock
        # the last pull error per back-off key: why the pod is backing off (upstream's
        # prevPullErrMsg), which the bare "Back-off pulling image" would not say
        self._last_error: dict[str, str] = {}

    @staticmethod
    def _backoff_key(pod: dict, image: str) -> str:
        return f"{(pod.get('metadata') or {}).get('uid', '')}_{image}"

    def retry_in(self, pod: dict, container: dict) -> float:
        """Seconds until a failed pull of the container's image may be tried again (0: now)."""
        return self.backoff.remaining(self._backoff_key(pod, container.get("image") or ""))

    async def ensure_image(self, pod: dict, container: dict, pull_secrets: list[dict],
                           recorder: Recorder | None = None) -> Image:
        record = recorder or (lambda *_: None)
        image = container.get("image") or ""
        try:
            ref = reference.parse(image).with_tag_default()
        except InvalidImageName as e:
            msg = (f'Failed to apply default image tag "{image}": couldn\'t parse image '
                   f'reference "{image}": {e}')
            record("Warning", "InspectFailed", msg)
            raise InvalidImageName(msg) from e
        policy = container.get("imagePullPolicy") or default_pull_policy(image)
        present = await self.service.image_status(ref.string())
        if policy != PULL_ALWAYS and present is not None:
            record("Normal", "Pulled", f'Container image "{image}" already present on machine')
            return present
        if policy == PULL_NEVER:
            msg = f'Container image "{image}" is not present with pull policy of Never'
            record("Warning", "ErrImageNeverPull", msg)
            raise ImageNeverPull(msg)
        key = self._backoff_key(pod, image)
        if self.backoff.in_backoff(key):
            msg = f'Back-off pulling image "{image}"'
            record("Normal", "BackOff", msg)
            previous = self._last_error.get(key)
            raise ImagePullBackOff(f"{msg}: {previous}" if previous else msg)
        record("Normal", "Pulling", f'Pulling image "{image}"')
        start = self.clock()
        try:
            pulled = await self._pull(ref.string(), pull_secrets)
        except PullError as e:
            record("Warning", "Failed", f'Failed to pull image "{image}": {e}')
            self.backoff.next(key)
            self._last_error[key] = f"{e.reason}: {e}"
            raise
        took = _seconds(self.clock() - start)
        record("Normal", "Pulled", f'Successfully pulled image "{image}" in {took} ({took} '
                                   f'including waiting). Image size: {pulled.size} bytes.')
        self.backoff.reset(key)
        self.backoff.gc()
        self._last_error.pop(key, None)
        # forget the errors of keys whose back-off was forgotten, so the map never grows
        for stale in [k for k in self._last_error if not self.backoff.get(k)]:
            del self._last_error[stale]
        return pulled

    async def _pull(self, ref: str, pull_secrets: list[dict]) -> Image:
        name = reference.parse(ref).name
        creds = Keyring.from_secrets(pull_secrets).lookup(name)
        last: PullError | None = None
        for auth in creds:
            entry = {"username": auth.username, "password": auth.password}
            if auth.identity_token:
                entry["identitytoken"] = auth.identity_token
            try:
                return await self.service.pull_image(ref, entry)
            except PullError as e:
                last = e
        if last is not None:
            raise last
        return await self.service.pull_image(ref, None)
