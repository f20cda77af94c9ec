"""The built image (`make image`: dist/image, dist/image.digest) unpacked for tests/image.

`unpack_image` checks the layout against the digest file and unpacks it with umoci;
`ImageRoot.launch` runs `runnerfleet ARGS` from that root filesystem the way a container
runtime would: in a chroot, as the image's user, with the image's entrypoint, working
directory and environment, sharing the host's network (so it reaches the fake GitHub and the
local control plane on loopback). Files the command names by absolute host path (kubeconfigs)
are copied into the root filesystem first. Missing image or tools fail the test, never skip.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / "dist" / "image"
DIGEST_FILE = ROOT / "dist" / "image.digest"
SHARED = "/tmp/host-files"  # where shared host files appear inside the image


@dataclass
class ImageRoot:
    rootfs: Path
    config: dict[str, Any]  # the OCI image config's "config" (User, Env, Entrypoint, ...)
    digest: str
    _shared: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def user(self) -> tuple[int, int]:
        uid, _, gid = self.config["User"].partition(":")
        return int(uid), int(gid)

    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config["Env"])

    def argv(self, args: list[str]) -> list[str]:
        """chroot(8) changes to / (the image's WorkingDir, checked) and finds the entrypoint
        on the image's PATH, which the caller passes in the environment."""
        assert self.config["WorkingDir"] == "/"
        uid, gid = self.user
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        return [chroot, f"--userspec={uid}:{gid}", str(self.rootfs), *self.config["Entrypoint"],
                *args]  # fmt: skip

    def share(self, value: str) -> str:
        """A host file the command names, copied into the image (owned by its user)."""
        path = Path(value)
        if not (path.is_absolute() and path.is_file()) or path.is_relative_to(self.rootfs):
            return value
        inside = f"{SHARED}/{next(self._shared)}-{path.name}"
        target = self.rootfs / inside.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        os.chown(target, *self.user)
        target.chmod(0o600)
        return inside

    def launch(self, args: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """A `runnerfleet.sim.operator_process.Launch`: only the image's environment, the
        test session's RUNNERFLEET_* settings (sweep intervals) and the caller's variables."""
        session = {k: v for k, v in os.environ.items() if k.startswith("RUNNERFLEET_")}
        shared_env = {k: self.share(v) for k, v in env.items()}
        return self.argv([self.share(a) for a in args]), {**self.env(), **session, **shared_env}

    def runc_bundle(self, into: Path, env: dict[str, str], mounts: dict[str, Path]) -> Path:
        """An OCI bundle for runc: umoci's runtime config for the image (its entrypoint and
        CMD, user, env, working directory, namespaces) unchanged but for the host's network
        (to reach the local control plane on loopback), the extra `env` and read-only bind
        `mounts` (path in the container -> host file); a read-only root with a tmpfs /tmp, as
        the chart runs the operator (readOnlyRootFilesystem, an emptyDir at /tmp)."""
        spec: dict[str, Any] = json.loads((self.rootfs.parent / "config.json").read_text())
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["process"]["terminal"] = False
        spec["process"]["env"] += [f"{k}={v}" for k, v in env.items()]
        spec["linux"]["namespaces"] = [
            ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"
        ]
        spec["mounts"] += [
            {"destination": inside, "source": str(host), "type": "bind",
             "options": ["bind", "ro"]}
            for inside, host in mounts.items()
        ]  # fmt: skip
        spec["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "mode=1777"]})  # fmt: skip
        into.mkdir(parents=True, exist_ok=True)
        (into / "config.json").write_text(json.dumps(spec))
        return into

    @contextmanager
    def runc(self, bundle: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
        """`runc run` of `bundle` in the foreground (runc forwards signals to the container's
        PID 1); killed and deleted on the way out if still there."""
        container = f"rf-image-{uuid.uuid4().hex[:8]}"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["runc", "run", "--bundle", str(bundle), container], stdout=out, stderr=out
            )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                subprocess.run(["runc", "kill", container, "KILL"], check=False)
                proc.wait(10)
            subprocess.run(["runc", "delete", "--force", container], check=False,
                           capture_output=True)  # fmt: skip

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv, env = self.launch(list(args), {})
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip


def _blob(digest: str) -> dict[str, Any]:
    data = (LAYOUT / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"blob {digest} is corrupt"
    value: dict[str, Any] = json.loads(data)
    return value


def unpack_image(into: Path, tag: str) -> ImageRoot:
    """dist/image:`tag` unpacked under `into`; fails with what to run when anything is missing."""
    missing = [tool for tool in ("umoci", "chroot", "runc") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install umoci runc", False)
    if os.geteuid() != 0:
        pytest.fail("the image smoke test chroots: run it as root", pytrace=False)
    if not (LAYOUT / "index.json").is_file() or not DIGEST_FILE.is_file():
        pytest.fail(f"no image at {LAYOUT}: run `make image` first", pytrace=False)
    digest = DIGEST_FILE.read_text().strip()
    index = json.loads((LAYOUT / "index.json").read_text())
    tagged = [
        m["digest"] for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]  # fmt: skip
    assert tagged == [digest], f"{LAYOUT}:{tag} is {tagged}, {DIGEST_FILE} says {digest}"
    config = _blob(_blob(digest)["config"]["digest"])["config"]
    bundle = into / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{LAYOUT}:{tag}", str(bundle)],
                   check=True, capture_output=True)  # fmt: skip
    return ImageRoot(bundle / "rootfs", config, digest)
