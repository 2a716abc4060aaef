"""exec probes: run a command in the container; exit code 0 is success.

The command goes through ``RuntimeService.exec_sync`` with the probe's timeout. Upstream's
rules kept here:
- the output is stdout followed by stderr, cut to 10 KiB (it becomes the ``Unhealthy`` event);
- a timeout is a *failure* whose output is ``command "<cmd>" timed out``;
- a runtime fault (container gone, exec refused) is an error, not a failure (`ProbeError`);
- ``$(VAR)`` in the command expands from the container's *static* env only (``env[].value``);
  a probe never sees ``valueFrom`` values or the pod's downward API.
"""

from __future__ import annotations

from kubeling.kubelet.prober.probe import MAX_OUTPUT, Outcome, ProbeError, Result
from kubeling.kubelet.runtime import RuntimeError_


async def probe_exec(runtime, container_id: str, command: list[str], timeout: float) -> Outcome:
    try:
        code, stdout, stderr = await runtime.exec_sync(container_id, command, timeout)
    except TimeoutError:
        return Outcome(Result.FAILURE, f'command "{" ".join(command)}" timed out')
    except RuntimeError_ as e:
        raise ProbeError(str(e) or type(e).__name__) from e
    output = (stdout + stderr)[:MAX_OUTPUT].decode("utf-8", "replace")
    return Outcome(Result.SUCCESS if code == 0 else Result.FAILURE, output)


def expand_static(command: list[str], env: list[dict] | None) -> list[str]:
    """Expand ``$(NAME)`` from ``env`` values as written in the spec (``$$`` escapes ``$``).

    Like upstream, a ``valueFrom`` variable counts as defined with an empty value, and an
    unknown name is left as written."""
    values = {e.get("name", ""): e.get("value", "") for e in env or []}
    return [expand(arg, values) for arg in command]


def expand(text: str, values: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` syntax (``third_party/forked/golang/expansion``)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 == n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end == -1:
                # An unclosed reference is kept literally and scanning goes on after "$(".
                out.append("$(")
                i += 2
            else:
                name = text[i + 2:end]
                out.append(values.get(name, f"$({name})"))
                i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)
