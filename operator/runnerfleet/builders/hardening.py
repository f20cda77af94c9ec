"""Hardening options of runner pods (issue 13 item 7, docs/runner-scale-set.md "Hardening"
and "Defaults"): a read-only root filesystem with writable volumes where the runner writes,
and default resources for a runner container whose template sets none.

Read-only root: the stock runner image writes into its own directory (/home/runner): the
JIT config's `.runner` and `.credentials*` files at start, `_diag` logs, `_work`. So the
runner directory is copied into an emptyDir by an init container of the same image (a copy
per pod start, a few hundred MB of ephemeral storage) and mounted over /home/runner; the
work directory (`work`, see `work_volume`) and /tmp are emptyDirs of their own. The root
filesystem itself (the OS, the tool cache image layers) stays read-only.

Layer: builders. Pure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Final

from runnerfleet import conventions as c
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec

RUNNER_HOME: Final = "/home/runner"
RUNNER_HOME_VOLUME: Final = "runner-home"
TMP_VOLUME: Final = "tmp"
COPY_CONTAINER: Final = "runner-home"
COPY_MOUNT: Final = "/runnerfleet/home"

WorkVolume = Callable[[RunnerScaleSetSpec], dict[str, Any]]


def work_volume(spec: RunnerScaleSetSpec) -> dict[str, Any]:
    """The volume behind the work directory (named `c.WORK_VOLUME`): an emptyDir. The
    container-modes part passes its own (an ephemeral volume claim) as `work=`."""
    return {"name": c.WORK_VOLUME, "emptyDir": {}}


def _runner(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return next(x for x in pod_spec["containers"] if x.get("name") == c.RUNNER_CONTAINER)


def _add_volume(pod_spec: dict[str, Any], volume: dict[str, Any]) -> None:
    """Add a volume unless the template has one of that name (the template wins)."""
    volumes = pod_spec.setdefault("volumes", [])
    if all(v.get("name") != volume["name"] for v in volumes):
        volumes.append(volume)


def _add_mount(container: dict[str, Any], name: str, path: str) -> None:
    """Mount `name` at `path` unless the template mounts something there already."""
    mounts = container.setdefault("volumeMounts", [])
    if all(m.get("mountPath") != path for m in mounts):
        mounts.append({"name": name, "mountPath": path})


def apply_read_only_root(
    pod: dict[str, Any], spec: RunnerScaleSetSpec, work: WorkVolume = work_volume
) -> None:
    """Edit a rendered runner pod in place: read-only root for the runner container, the
    runner directory copied into a writable emptyDir, work and /tmp volumes."""
    pod_spec = pod["spec"]
    runner = _runner(pod_spec)
    runner.setdefault("securityContext", {})["readOnlyRootFilesystem"] = True
    copier = {
        "name": COPY_CONTAINER,
        "image": runner.get("image", c.DEFAULT_RUNNER_IMAGE),
        # `-a` keeps modes and symlinks; the trailing `/.` copies hidden files as well.
        "command": ["cp", "-a", f"{RUNNER_HOME}/.", f"{COPY_MOUNT}/"],
        "securityContext": {**copy.deepcopy(runner["securityContext"])},
        "volumeMounts": [{"name": RUNNER_HOME_VOLUME, "mountPath": COPY_MOUNT}],
    }
    if "resources" in runner:
        copier["resources"] = copy.deepcopy(runner["resources"])
    init = [x for x in pod_spec.get("initContainers", []) if x.get("name") != COPY_CONTAINER]
    pod_spec["initContainers"] = [copier, *init]
    _add_volume(pod_spec, {"name": RUNNER_HOME_VOLUME, "emptyDir": {}})
    _add_volume(pod_spec, work(spec))
    _add_volume(pod_spec, {"name": TMP_VOLUME, "emptyDir": {}})
    _add_mount(runner, RUNNER_HOME_VOLUME, RUNNER_HOME)
    _add_mount(runner, c.WORK_VOLUME, c.RUNNER_WORK_DIR)
    _add_mount(runner, TMP_VOLUME, "/tmp")  # noqa: S108 (a mount point, not a temp file)


def apply_default_resources(pod: dict[str, Any], defaults: dict[str, Any] | None) -> None:
    """Give the runner container the operator's default resources when its template sets
    no `resources` at all: the user's template always wins, even a partial one (a template
    that sets only limits keeps exactly its limits)."""
    if not defaults:
        return
    runner = _runner(pod["spec"])
    if runner.get("resources"):
        return
    runner["resources"] = copy.deepcopy(defaults)
    # The read-only root's copier runs as the runner does, within the same bounds.
    for init in pod["spec"].get("initContainers", []):
        if init.get("name") == COPY_CONTAINER and not init.get("resources"):
            init["resources"] = copy.deepcopy(defaults)


def apply_hardening(
    pod: dict[str, Any], spec: RunnerScaleSetSpec, work: WorkVolume = work_volume
) -> None:
    """Edit a rendered runner pod in place with the scale set's hardening options (none
    set: the pod is left exactly as it was). The operator's default resources are applied
    apart (`apply_default_resources`): they are an operator setting, not part of the spec
    the template hash covers."""
    if spec.hardening is not None and spec.hardening.read_only_root_filesystem:
        apply_read_only_root(pod, spec, work)
