"""Where the control plane's binaries live, and the versions they are pinned to.

The versions here must match the wrapper modules in tools/*/go.mod (a unit test checks it).
Binaries are built by `make cluster-binaries` into
`$RUNNERFLEET_CACHE/bin/<wrapper>-<version>/` (default cache: ~/.cache/runnerfleet), so a
version bump means a fresh build and old builds never shadow new pins.

Layer: tooling. Reads the environment and the file system; no network.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runnerfleet.localcluster.errors import ClusterError

KUBERNETES_VERSION: Final = "v1.36.3"
ETCD_VERSION: Final = "v3.6.8"
KWOK_VERSION: Final = "v0.7.0"
KARPENTER_VERSION: Final = "v1.14.1"
HELM_VERSION: Final = "v3.22.0"

# binary name -> (wrapper module under tools/, pinned version)
BINARIES: Final[dict[str, tuple[str, str]]] = {
    "etcd": ("etcd", ETCD_VERSION),
    "kube-apiserver": ("k8s", KUBERNETES_VERSION),
    "kube-controller-manager": ("k8s", KUBERNETES_VERSION),
    "kube-scheduler": ("k8s", KUBERNETES_VERSION),
    "kubectl": ("k8s", KUBERNETES_VERSION),
    "kwok": ("kwok", KWOK_VERSION),
}
# Optional: Karpenter's kwok provider, for `cluster up --karpenter`. Its CRDs are copied next
# to it at build time (from the module), so running it needs no Go module cache.
KARPENTER: Final = ("karpenter", KARPENTER_VERSION)
KARPENTER_BINARY: Final = "karpenter-kwok"
KARPENTER_CRDS: Final = "karpenter-crds"
# The helm CLI, for chart lint/template/install tests (not part of the control plane).
HELM: Final = ("helm", HELM_VERSION)


class MissingBinariesError(ClusterError):
    """Some control-plane binaries have not been built yet."""


def cache_dir() -> Path:
    """The cache root: $RUNNERFLEET_CACHE, else ~/.cache/runnerfleet."""
    return Path(os.environ.get("RUNNERFLEET_CACHE", Path.home() / ".cache" / "runnerfleet"))


@dataclass(frozen=True)
class BinaryPaths:
    """Absolute paths of every binary the control plane runs."""

    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]

    @classmethod
    def locate(cls, bin_dir: Path | None = None, karpenter: bool = False) -> BinaryPaths:
        """Find the binaries: in `bin_dir` (flat) if given or $RUNNERFLEET_BIN_DIR, else the cache.
        With `karpenter`, also Karpenter's kwok provider and its CRD directory.

        Raises MissingBinariesError with the fix (build them, or install Go first).
        """
        flat = bin_dir or (Path(p) if (p := os.environ.get("RUNNERFLEET_BIN_DIR")) else None)
        wanted = dict(BINARIES)
        if karpenter:
            wanted[KARPENTER_BINARY] = KARPENTER
            wanted[KARPENTER_CRDS] = KARPENTER
        paths: dict[str, Path] = {}
        for name, (wrapper, version) in wanted.items():
            base = flat if flat is not None else cache_dir() / "bin" / f"{wrapper}-{version}"
            paths[name] = (base / name).absolute()
        missing = [n for n, p in paths.items() if not os.access(p, os.X_OK)]
        if missing:
            raise MissingBinariesError(_missing_message(missing, paths))
        return cls(paths)


def helm_binary(bin_dir: Path | None = None) -> Path:
    """The pinned helm CLI (built by `make cluster-binaries`); MissingBinariesError if absent."""
    flat = bin_dir or (Path(p) if (p := os.environ.get("RUNNERFLEET_BIN_DIR")) else None)
    wrapper, version = HELM
    path = ((flat or cache_dir() / "bin" / f"{wrapper}-{version}") / "helm").absolute()
    if not os.access(path, os.X_OK):
        raise MissingBinariesError(
            f"helm is not built ({path} missing): run `make cluster-binaries`"
        )
    return path


def _missing_message(missing: list[str], paths: dict[str, Path]) -> str:
    where = paths[missing[0]].parent
    names = ", ".join(missing)
    if set(missing) <= {KARPENTER_BINARY, KARPENTER_CRDS}:
        return (
            f"Karpenter's kwok provider is not built ({names} missing in {where}): run "
            "`make cluster-binaries` (it builds sigs.k8s.io/karpenter/kwok too)"
        )
    if shutil.which("go") is None:
        return (
            f"control-plane binaries not built ({names} missing in {where}) and the Go "
            "toolchain is not on PATH: install Go >= 1.26, then run `make cluster-binaries`"
        )
    return (
        f"control-plane binaries not built ({names} missing in {where}): "
        "run `make cluster-binaries`"
    )
