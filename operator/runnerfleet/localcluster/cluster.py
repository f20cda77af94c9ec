"""Bring a local control plane up, report on it, and take it down again.

One state directory holds everything of one cluster: certificates, the admin kubeconfig,
etcd's data, each component's log and `state.json` (pids, ports). Two clusters in two state
directories never collide: every port is chosen free unless pinned, and pinned ports are
checked first. If any step fails, every process started so far is stopped before the error
is raised, so a failed `up` leaves no orphans (logs stay for diagnosis until `down`).

Layer: tooling. Process, file and loopback network I/O.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from runnerfleet.localcluster import processes
from runnerfleet.localcluster.api import AdminApi, ApiUnavailableError, probe_http, probe_https
from runnerfleet.localcluster.binaries import (
    KARPENTER_BINARY,
    KARPENTER_CRDS,
    KUBERNETES_VERSION,
    BinaryPaths,
)
from runnerfleet.localcluster.errors import (
    ClusterError,
    ComponentCrashedError,
    ReadinessTimeoutError,
)
from runnerfleet.localcluster.nodes import KWOK_ANNOTATION, KWOK_ANNOTATION_VALUE, NodeSpec
from runnerfleet.localcluster.pki import PkiPaths, write_pki
from runnerfleet.localcluster.ports import check_free, free_ports

SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.64.0.0/16"
_STATE_FILE = "state.json"
KWOK_NODE_CLASS = "default"
_POLL = 0.1
_RESTARTABLE = ("kube-apiserver", "etcd")


@dataclass
class ClusterInfo:
    """What `state.json` records about a running cluster."""

    state_dir: str
    kubeconfig: str
    kubernetes_version: str
    ports: dict[str, int]
    components: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @classmethod
    def load(cls, state_dir: Path) -> ClusterInfo | None:
        try:
            data = json.loads((state_dir / _STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(**data)

    def save(self) -> None:
        path = Path(self.state_dir) / _STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


class LocalCluster:
    """A local control plane rooted at one state directory."""

    def __init__(self, state_dir: Path, bin_dir: Path | None = None) -> None:
        self.state_dir = state_dir.absolute()
        self._bin_dir = bin_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._info: ClusterInfo | None = None

    # ----------------------------------------------------------------------------- queries
    @property
    def info(self) -> ClusterInfo:
        info = self._info or ClusterInfo.load(self.state_dir)
        if info is None:
            raise ClusterError(
                f"no local cluster in {self.state_dir}: start one with "
                f"`runnerfleet cluster up --state-dir {self.state_dir}`"
            )
        self._info = info
        return info

    @property
    def kubeconfig(self) -> Path:
        return Path(self.info.kubeconfig)

    def binaries(self) -> BinaryPaths:
        """The binaries this cluster runs with (kubectl included)."""
        return BinaryPaths.locate(self._bin_dir)

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        """Run the pinned kubectl against this cluster; returns stdout, raises ClusterError."""
        argv = [str(self.binaries()["kubectl"]), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def apply_crds(self, directory: Path) -> list[str]:
        """Apply every CRD file in `directory` and wait until each is Established."""
        files = sorted(directory.glob("*.yaml"))
        if not files:
            return []
        out = self.kubectl("apply", "--server-side", *[f"-f={f}" for f in files], "-o", "name")
        names = out.split()
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s", *names)
        return names

    def api(self) -> AdminApi:
        pki = self.state_dir / "pki"
        return AdminApi(
            self.info.ports["apiserver"], pki / "ca.crt", pki / "admin.crt", pki / "admin.key"
        )

    def running_components(self) -> dict[str, bool]:
        """Component name -> whether its process is alive."""
        info = ClusterInfo.load(self.state_dir)
        if info is None:
            return {}
        return {c["name"]: processes.is_ours(c["pid"], c["binary"]) for c in info.components}

    def status(self) -> dict[str, Any]:
        """A summary fit for `runnerfleet cluster status`."""
        info = ClusterInfo.load(self.state_dir)
        if info is None:
            return {"state_dir": str(self.state_dir), "running": False, "components": {}}
        alive = self.running_components()
        nodes: list[dict[str, Any]] = []
        healthy = False
        if alive.get("kube-apiserver"):
            try:
                healthy = self.api().get("/readyz").status == 200
                nodes = self._nodes()
            except ApiUnavailableError:
                healthy = False
        return {
            "state_dir": str(self.state_dir),
            "running": any(alive.values()),
            "healthy": healthy,
            "server": info.server,
            "kubeconfig": info.kubeconfig,
            "kubernetes_version": info.kubernetes_version,
            "components": {
                c["name"]: {"pid": c["pid"], "alive": alive[c["name"]], "log": c["log"]}
                for c in info.components
            },
            "ports": info.ports,
            "nodes": nodes,
        }

    # ----------------------------------------------------------------------------- up
    def up(
        self,
        nodes: Sequence[NodeSpec] = (NodeSpec(count=3),),
        apiserver_port: int | None = None,
        timeout: float = 90.0,
        karpenter: bool = False,
    ) -> ClusterInfo:
        """Start every component, create `nodes`, and return once all of it is ready.

        With `karpenter`, also install Karpenter's CRDs and a KWOKNodeClass named `default`,
        and run Karpenter's kwok provider: it launches nodes (which kwok then runs) for pods
        that do not fit, and removes them when they empty.
        """
        self._refuse_if_running()
        binaries = BinaryPaths.locate(self._bin_dir, karpenter=karpenter)
        if apiserver_port:
            check_free(apiserver_port, "kube-apiserver", "--apiserver-port")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True)
        try:
            info = self._up(binaries, nodes, apiserver_port, time.monotonic() + timeout)
            if karpenter:
                self._up_karpenter(binaries, time.monotonic() + timeout)
            return info
        except BaseException:
            self._stop_processes()
            raise

    def _refuse_if_running(self) -> None:
        alive = [name for name, up in self.running_components().items() if up]
        if alive:
            raise ClusterError(
                f"a local cluster is already running in {self.state_dir} ({', '.join(alive)}): "
                "use it, or stop it first with "
                f"`runnerfleet cluster down --state-dir {self.state_dir}`"
            )

    def _up(
        self,
        binaries: BinaryPaths,
        nodes: Sequence[NodeSpec],
        apiserver_port: int | None,
        deadline: float,
    ) -> ClusterInfo:
        chosen = free_ports(6)
        ports = {
            "apiserver": apiserver_port or chosen[0],
            "etcd": chosen[1],
            "etcd-peer": chosen[2],
            "controller-manager": chosen[3],
            "scheduler": chosen[4],
            "kwok": chosen[5],
        }
        pki = write_pki(self.state_dir / "pki")
        kubeconfig = self.state_dir / "kubeconfig"
        _write_kubeconfig(kubeconfig, ports["apiserver"], pki)
        self._info = ClusterInfo(
            state_dir=str(self.state_dir),
            kubeconfig=str(kubeconfig),
            kubernetes_version=KUBERNETES_VERSION,
            ports=ports,
            started_at=time.time(),
        )
        self._info.save()

        self._start("etcd", self._etcd_args(binaries, ports))
        self._wait("etcd to report healthy", deadline, lambda: _etcd_healthy(ports["etcd"]))
        self._start("kube-apiserver", self._apiserver_args(binaries, ports, pki))
        api = self.api()
        self._wait("kube-apiserver to be ready (/readyz)", deadline, lambda: _ready(api))
        self._start("kube-controller-manager", self._cm_args(binaries, ports, pki, kubeconfig))
        self._start("kube-scheduler", self._scheduler_args(binaries, ports, kubeconfig))
        self._start("kwok", self._kwok_args(binaries, ports, kubeconfig))
        for name in ("controller-manager", "scheduler"):
            self._wait(f"kube-{name} /healthz", deadline, partial(_healthz_ok, ports[name]))
        for spec in nodes:
            self.add_nodes(spec)
        expected = [n for spec in nodes for n in spec.names()]
        self._wait(
            f"{len(expected)} kwok nodes to be Ready", deadline, lambda: self._all_ready(expected)
        )
        self._wait(
            "the default ServiceAccount (controller-manager)",
            deadline,
            lambda: api.get("/api/v1/namespaces/default/serviceaccounts/default").status == 200,
        )
        return self._info

    def _up_karpenter(self, binaries: BinaryPaths, deadline: float) -> None:
        assert self._info is not None
        self.apply_crds(binaries[KARPENTER_CRDS])
        resp = self.api().post(
            "/apis/karpenter.kwok.sh/v1alpha1/kwoknodeclasses",
            {"apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass",
             "metadata": {"name": KWOK_NODE_CLASS}},
        )  # fmt: skip
        if resp.status not in (201, 409):
            raise ClusterError(f"creating KWOKNodeClass {KWOK_NODE_CLASS} failed: {resp.body}")
        metrics, health = free_ports(2)
        self._info.ports.update({"karpenter-metrics": metrics, "karpenter-health": health})
        env = {
            "KUBECONFIG": self._info.kubeconfig,
            "DISABLE_LEADER_ELECTION": "true",
            "METRICS_PORT": str(metrics),
            "HEALTH_PROBE_PORT": str(health),
            "SYSTEM_NAMESPACE": "kube-system",
            "LOG_LEVEL": "info",
            # Decide quickly: a burst of pending runner pods becomes nodes within ~2 s.
            "BATCH_IDLE_DURATION": "1s",
            "BATCH_MAX_DURATION": "3s",
        }
        self._start("karpenter", [str(binaries[KARPENTER_BINARY])], env)
        self._wait("Karpenter /readyz", deadline, partial(_http_ok, health, "/readyz"))

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        assert self._info is not None
        proc, started = processes.start(
            name, argv, self.state_dir / "logs" / f"{name}.log", self.state_dir, env
        )
        self._procs[name] = proc
        self._info.components.append(asdict(started))
        self._info.save()

    def _wait(self, what: str, deadline: float, ready: Callable[[], bool]) -> None:
        """Poll `ready` until true; fail fast if any started component exits meanwhile."""
        while True:
            self._check_alive()
            try:
                if ready():
                    return
            except ApiUnavailableError:
                pass
            if time.monotonic() > deadline:
                raise ReadinessTimeoutError(
                    f"timed out waiting for {what}: see the logs in {self.state_dir / 'logs'}; "
                    "on a loaded machine retry with a longer --timeout"
                )
            time.sleep(_POLL)

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            code = proc.poll()
            if code is None:
                continue
            log = self.state_dir / "logs" / f"{name}.log"
            cause = processes.explain_exit(log)
            if "address already in use" in cause:
                fix = "a port it needs was taken meanwhile; run `up` again to pick free ports"
            else:
                binary = self._binary_of(name)
                fix = f"check `{binary} --version`, or rebuild with `make cluster-binaries`"
            raise ComponentCrashedError(
                f"{name} exited with status {code} while starting: {cause} ({fix}; log: {log})"
            )

    def _binary_of(self, name: str) -> str:
        assert self._info is not None
        return next(str(c["binary"]) for c in self._info.components if c["name"] == name)

    # ----------------------------------------------------------------------------- restart
    def restart(
        self, component: str, down_for: float = 0.0, timeout: float = 90.0, grace: float = 10.0
    ) -> float:
        """Restart one component of the running control plane in place, as an outage would:
        stop it (SIGTERM, as a kubelet restarting a static pod, then SIGKILL after `grace`
        seconds: the apiserver drains for longer than 10 s), stay down `down_for` seconds,
        start it again with the same arguments (so the same ports, certificates and data)
        and wait until it is healthy again. Returns the whole outage in seconds: from the
        stop to healthy.

        `component` is "kube-apiserver" or "etcd". After etcd, the apiserver must recover by
        itself (its etcd client reconnects): this waits for its /readyz too, and raises
        ClusterError with the component's log tail if either does not come back.
        """
        if component not in _RESTARTABLE:
            raise ClusterError(
                f"cannot restart {component!r}: only {', '.join(_RESTARTABLE)} can be restarted"
            )
        info = self.info
        record = next((c for c in info.components if c["name"] == component), None)
        if record is None or not processes.is_ours(record["pid"], record["binary"]):
            raise ClusterError(
                f"{component} is not running in {self.state_dir}: start the cluster with `up`"
            )
        # The live command line is the one to repeat: same flags, ports and data directory.
        argv = processes.command_line(record["pid"])
        stopping = time.monotonic()
        processes.stop(record["pid"], record["binary"], grace=grace)
        if (old := self._procs.pop(component, None)) is not None:
            old.wait(timeout=5)  # collected here, whoever reaped it, so no zombie is left
        time.sleep(down_for)  # the outage itself, not a synchronisation
        proc, started = processes.start(component, argv, Path(record["log"]), self.state_dir)
        self._procs[component] = proc
        record["pid"] = started.pid
        info.save()
        deadline = time.monotonic() + timeout
        if component == "etcd":
            self._wait_restarted("etcd", deadline, lambda: _etcd_healthy(info.ports["etcd"]))
        api = self.api()
        self._wait_restarted(component, deadline, lambda: _ready(api))
        return time.monotonic() - stopping

    def _wait_restarted(self, component: str, deadline: float, ready: Callable[[], bool]) -> None:
        """`_wait`, with the restarted component's log tail in the error."""
        try:
            self._wait(f"{component} to come back after its restart", deadline, ready)
        except ClusterError as err:
            log = self.state_dir / "logs" / f"{component}.log"
            raise ClusterError(f"{err}\n{component} log tail:\n{processes.tail(log)}") from err

    # ----------------------------------------------------------------------------- nodes
    def add_nodes(self, spec: NodeSpec) -> list[str]:
        """Create the fake nodes of `spec` (kwok makes them Ready); returns their names."""
        api = self.api()
        for manifest in spec.manifests():
            resp = api.post("/api/v1/nodes", manifest)
            if resp.status not in (201, 409):
                raise ClusterError(
                    f"creating node {manifest['metadata']['name']} failed: "
                    f"{resp.status} {resp.body}"
                )
        return spec.names()

    def _nodes(self) -> list[dict[str, Any]]:
        body = self.api().get("/api/v1/nodes").body
        out = []
        for item in body.get("items", []) if isinstance(body, dict) else []:
            conds = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
            out.append(
                {
                    "name": item["metadata"]["name"],
                    "ready": conds.get("Ready") == "True",
                    "kwok": item["metadata"].get("annotations", {}).get(KWOK_ANNOTATION)
                    == KWOK_ANNOTATION_VALUE,
                    "taints": item.get("spec", {}).get("taints", []),
                }
            )
        return out

    def _all_ready(self, names: Sequence[str]) -> bool:
        ready = {n["name"] for n in self._nodes() if n["ready"]}
        return all(n in ready for n in names)

    # ----------------------------------------------------------------------------- down
    def down(self) -> bool:
        """Stop every process this state directory records and remove the directory.

        Returns False if there was nothing to take down. Safe to call repeatedly.
        """
        existed = self.state_dir.exists()
        self._stop_processes()
        # Anything still mentioning the state dir (a component's child) is ours too.
        for pid in processes.processes_mentioning(str(self.state_dir) + "/"):
            processes.stop(pid, Path(f"/proc/{pid}/exe").resolve().as_posix(), grace=5.0)
        if existed:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self._info = None
        return existed

    def _stop_processes(self) -> None:
        info = ClusterInfo.load(self.state_dir)
        recorded = list(reversed(info.components)) if info else []
        for comp in recorded:
            processes.stop(comp["pid"], comp["binary"])
        for proc in self._procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    # ----------------------------------------------------------------------------- argv
    def _etcd_args(self, b: BinaryPaths, ports: dict[str, int]) -> list[str]:
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            str(b["etcd"]),
            "--name=local",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--initial-cluster-state=new",
            # Throwaway clusters: durability is not worth the fsync latency on a shared disk.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, b: BinaryPaths, ports: dict[str, int], pki: PkiPaths) -> list[str]:
        return [
            str(b["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_public}",
            f"--service-account-signing-key-file={pki.sa_private}",
            # Only namespace Pod Security labels should decide whether privileged pods run.
            "--allow-privileged=true",
            # 127.0.0.1 cannot be the `kubernetes` Service's endpoint; nothing here needs it.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ]

    def _cm_args(
        self, b: BinaryPaths, ports: dict[str, int], pki: PkiPaths, kubeconfig: Path
    ) -> list[str]:
        return [
            str(b["kube-controller-manager"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller-manager']}",
            f"--cert-dir={self.state_dir / 'controller-manager-certs'}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki.sa_private}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ]

    def _scheduler_args(self, b: BinaryPaths, ports: dict[str, int], kubeconfig: Path) -> list[str]:
        return [
            str(b["kube-scheduler"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            f"--cert-dir={self.state_dir / 'scheduler-certs'}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ]

    def _kwok_args(self, b: BinaryPaths, ports: dict[str, int], kubeconfig: Path) -> list[str]:
        return [
            str(b["kwok"]),
            f"--kubeconfig={kubeconfig}",
            # An explicit (empty) config so a user's ~/.kwok/kwok.yaml never leaks in.
            f"--config={_write_kwok_config(self.state_dir)}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}={KWOK_ANNOTATION_VALUE}",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.63.0.1",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--node-lease-duration-seconds=40",
        ]


def _write_kubeconfig(path: Path, port: int, pki: PkiPaths) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "runnerfleet-local",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": b64(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "runnerfleet-local",
                "context": {"cluster": "runnerfleet-local", "user": "admin"},
            }
        ],
        "current-context": "runnerfleet-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _write_kwok_config(state_dir: Path) -> Path:
    path = state_dir / "kwok.yaml"
    path.write_text(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n"
    )
    return path


def _etcd_healthy(port: int) -> bool:
    got = probe_http(port, "/health")
    return got is not None and got[0] == 200 and '"true"' in got[1]


def _http_ok(port: int, path: str) -> bool:
    found = probe_http(port, path)
    return found is not None and found[0] == 200


def _healthz_ok(port: int) -> bool:
    return probe_https(port, "/healthz") == 200


def _ready(api: AdminApi) -> bool:
    return api.get("/readyz").status == 200
