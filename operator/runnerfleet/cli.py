"""`runnerfleet` command line: the local cluster today; operator, listener and demo as they land.

Layer: top (entry points). Errors become one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from runnerfleet import conventions as c
from runnerfleet import logs
from runnerfleet.localcluster import ClusterError, LocalCluster, NodeSpec, parse_taint
from runnerfleet.localcluster.nodes import parse_label

_out = Console(soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def default_state_dir() -> Path:
    env = os.environ.get("RUNNERFLEET_STATE_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "runnerfleet" / "clusters" / "default"


_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_state_dir,
    show_default="$RUNNERFLEET_STATE_DIR or ~/.cache/runnerfleet/clusters/default",
    help="Directory holding this cluster's certificates, data, logs and kubeconfig.",
)


def _fail(message: str) -> None:
    _err.print(f"runnerfleet: error: {message}", markup=False)
    sys.exit(1)


def _setup_logging(verbose: bool = False) -> None:
    """RUNNERFLEET_LOG_FORMAT (text|json) for every line the process logs; a bad value exits
    2 naming the variable, as the operator's other settings do (runnerfleet/logs.py)."""
    try:
        fmt = logs.format_from_env()
    except logs.LogFormatError as err:
        _err.print(f"runnerfleet: error: {err}", markup=False)
        sys.exit(2)
    logs.configure(fmt, verbose)


@click.group()
@click.version_option(package_name="runnerfleet")
def main() -> None:
    """runnerfleet: ephemeral GitHub Actions runners on Kubernetes, per team."""


@main.group()
def cluster() -> None:
    """A real local control plane: etcd, apiserver, controller-manager, scheduler, kwok."""


@cluster.command()
@_state_dir_option
@click.option(
    "--nodes",
    "node_count",
    type=click.IntRange(min=0),
    default=None,
    help="Number of kwok (simulated) nodes [default: 3, or 0 with --karpenter].",
)
@click.option(
    "--node-label",
    "node_labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="Label for every node (repeatable).",
)
@click.option(
    "--node-taint",
    "node_taints",
    multiple=True,
    metavar="KEY[=VALUE]:EFFECT",
    help="Taint for every node (repeatable).",
)
@click.option(
    "--apiserver-port",
    type=click.IntRange(min=0, max=65535),
    default=0,
    help="Pin kube-apiserver's port (default: a free one).",
)
@click.option(
    "--bin-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory with all binaries (default: the build cache, see `make cluster-binaries`).",
)
@click.option(
    "--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait for readiness."
)
@click.option(
    "--karpenter",
    is_flag=True,
    help="Also run Karpenter's kwok provider (with its CRDs and a KWOKNodeClass `default`); "
    "--nodes then defaults to 0, since Karpenter launches nodes for pending pods.",
)
def up(
    state_dir: Path,
    node_count: int | None,
    node_labels: tuple[str, ...],
    node_taints: tuple[str, ...],
    apiserver_port: int,
    bin_dir: Path | None,
    timeout: float,
    karpenter: bool,
) -> None:
    """Start the control plane and print the admin kubeconfig's path."""
    if node_count is None:
        node_count = 0 if karpenter else 3
    try:
        labels = dict(parse_label(t) for t in node_labels)
        taints = tuple(parse_taint(t) for t in node_taints)
    except ValueError as err:
        _fail(str(err))
    spec = NodeSpec(count=node_count, labels=labels, taints=taints)
    started = time.monotonic()
    try:
        info = LocalCluster(state_dir, bin_dir).up(
            [spec], apiserver_port or None, timeout, karpenter=karpenter
        )
    except ClusterError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        _fail("interrupted; every process started was stopped")
    _out.print(
        f"local cluster ready in {time.monotonic() - started:.1f}s: Kubernetes "
        f"{info.kubernetes_version}, {node_count} kwok node(s), apiserver {info.server}"
        + (", Karpenter (kwok provider)" if karpenter else "")
    )
    _out.print(f"kubeconfig: {info.kubeconfig}", markup=False)
    _out.print(f"  export KUBECONFIG={info.kubeconfig}", markup=False)


@cluster.command()
@_state_dir_option
def down(state_dir: Path) -> None:
    """Stop every process of the cluster and remove its state directory."""
    try:
        existed = LocalCluster(state_dir).down()
    except ClusterError as err:
        _fail(str(err))
    _out.print(f"stopped and removed {state_dir}" if existed else f"no cluster in {state_dir}")


@cluster.command()
@_state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(state_dir: Path, as_json: bool) -> None:
    """Say what is running. Exit code 0 if the cluster is healthy, 1 if not, 3 if absent."""
    report = LocalCluster(state_dir).status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_status(report)
    if not report["running"]:
        sys.exit(3)
    sys.exit(0 if report["healthy"] else 1)


def _print_status(report: dict[str, Any]) -> None:
    if not report["running"] and not report["components"]:
        _out.print(f"no cluster in {report['state_dir']}", markup=False)
        return
    table = Table(title=f"local cluster in {report['state_dir']}")
    table.add_column("component")
    table.add_column("pid", justify="right")
    table.add_column("state")
    for name, comp in report["components"].items():
        state = "[green]running[/]" if comp["alive"] else "[red]stopped[/]"
        table.add_row(name, str(comp["pid"]), state)
    _out.print(table)
    ready = sum(1 for n in report["nodes"] if n["ready"])
    _out.print(
        f"apiserver {report['server']} healthy={report['healthy']}; "
        f"nodes ready {ready}/{len(report['nodes'])}"
    )
    _out.print(f"kubeconfig: {report['kubeconfig']}", markup=False)


@main.command()
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many jobs to feed through the fleet.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary as one JSON object on the last line."
)
@click.option("--keep", is_flag=True, help="Leave the local cluster running afterwards.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: Path.home() / ".cache" / "runnerfleet" / "clusters" / "demo",
    show_default="~/.cache/runnerfleet/clusters/demo",
)
@click.option(
    "--example",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=Path("examples/runnerscaleset.yaml"),
    show_default=True,
)
@click.option(
    "--listener-example",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=Path("examples/teamlistener.yaml"),
    show_default=True,
)
@click.option(
    "--rest",
    is_flag=True,
    help="The REST path (protocol: rest; webhooks + polling) instead of GitHub's scale-set "
    "protocol.",
)
@click.option(
    "--poll-only", is_flag=True, help="REST path without webhooks: the listener only polls."
)
@click.option("--poll-interval", default="15s", show_default=True)
def demo(
    jobs: int, as_json: bool, keep: bool, state_dir: Path, example: Path,
    listener_example: Path, rest: bool, poll_only: bool, poll_interval: str,
) -> None:  # fmt: skip
    """Local cluster + operator + fake GitHub + simulated runners, fed a stream of jobs.

    By default the scale set uses GitHub's runner scale-set protocol (the listener holds its
    message session); --rest uses REST registration with webhooks, --poll-only (implies
    --rest) polling only. Exit code 0 only if every job completed and nothing was left behind.
    """
    import asyncio

    from runnerfleet.sim.demo import Demo

    cluster_ = LocalCluster(state_dir)
    started_here = False
    console = _err if as_json else _out
    try:
        if not any(cluster_.running_components().values()):
            console.print(f"starting the local control plane in {state_dir} ...")
            cluster_.up([NodeSpec(count=4)])
            started_here = True
        cluster_.apply_crds(Path(__file__).resolve().parents[2] / "crds")
        demo_ = Demo(
            cluster_.kubeconfig, example, listener_example, jobs, state_dir / "logs", console,
            delivery="poll" if poll_only else "webhook" if rest else "scaleSet",
            poll_interval=poll_interval,
        )  # fmt: skip
        result = asyncio.run(demo_.run())
    except ClusterError as err:
        _fail(str(err))
    finally:
        if started_here and not keep:
            cluster_.down()
    summary = result.as_dict()
    if as_json:
        click.echo(json.dumps(summary))
    else:
        table = Table(title="demo summary")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key, value in summary.items():
            table.add_row(key, json.dumps(value))
        _out.print(table)
    sys.exit(0 if result.ok else 1)


@main.command("operator")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeatable); default: the whole cluster.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="Kubeconfig to use (default: in-cluster, then $KUBECONFIG).",
)
@click.option("--verbose", is_flag=True, help="Debug logging.")
@click.option(
    "--leader-elect/--no-leader-elect",
    envvar="RUNNERFLEET_LEADER_ELECT",
    default=False,
    show_default=True,
    help="Act only while holding a Lease, so several replicas are safe (one acts).",
)
@click.option(
    "--lease-namespace",
    envvar="RUNNERFLEET_NAMESPACE",
    default="default",
    show_default=True,
    help="Namespace of the leader-election Lease (the operator's own).",
)
@click.option(
    "--lease-name", envvar="RUNNERFLEET_LEASE_NAME", default="runnerfleet-operator",
    show_default=True,
)  # fmt: skip
@click.option(
    "--lease-seconds", envvar="RUNNERFLEET_LEASE_SECONDS", type=click.IntRange(min=2),
    default=6, show_default=True, help="Lease duration: the longest failover takes.",
)  # fmt: skip
def run_operator(
    namespaces: tuple[str, ...],
    kubeconfig: str | None,
    verbose: bool,
    leader_elect: bool,
    lease_namespace: str,
    lease_name: str,
    lease_seconds: int,
) -> None:
    """Run the operator (kopf) in the foreground."""
    # Before importing kopf: kubernetes_asyncio reads $KUBECONFIG once, at import time.
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
        os.environ["RUNNERFLEET_KUBECONFIG"] = kubeconfig
    import kopf

    from runnerfleet.handlers.operator import LeaseSettings, operate  # registers handlers

    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.PLAIN)  # levels; then ours:
    _setup_logging(verbose)
    lease = LeaseSettings(lease_namespace, lease_name, lease_seconds) if leader_elect else None
    sys.exit(asyncio.run(operate(list(namespaces), lease)))


@main.command("status")
@click.option(
    "--kubeconfig", type=click.Path(dir_okay=False), default=None,
    help="Kubeconfig to use (default: $KUBECONFIG, then ~/.kube/config).",
)  # fmt: skip
@click.option("-n", "--namespace", default=None, help="Only this namespace (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="--watch period.")
@click.option(
    "--costs",
    is_flag=True,
    help="Runner and node hours (and money) per team, "
    "today and the last 7 days, from the operator's summary (docs/costs.md).",
)
@click.option(
    "--operator-namespace",
    envvar="RUNNERFLEET_NAMESPACE",
    default="default",
    show_default=True,
    help="--costs: the operator's namespace (its ConfigMap).",
)
def fleet_status(
    kubeconfig: str | None, namespace: str | None, as_json: bool, watch: bool, interval: float,
    costs: bool, operator_namespace: str,
) -> None:  # fmt: skip
    """Teams, scale sets, queue depth, runners by state and recent failures."""
    from runnerfleet.statusview import run_costs, run_status

    if costs:
        sys.exit(asyncio.run(run_costs(kubeconfig, operator_namespace, as_json)))
    try:
        sys.exit(asyncio.run(run_status(kubeconfig, namespace, as_json, watch, interval)))
    except KeyboardInterrupt:
        sys.exit(0)


@main.command("listen")
@click.option("--namespace", envvar="RUNNERFLEET_LISTENER_NAMESPACE", required=True)
@click.option(
    "--name",
    envvar="RUNNERFLEET_LISTENER_NAME",
    required=True,
    help="The TeamListener this process serves.",
)
@click.option("--kubeconfig", envvar="RUNNERFLEET_KUBECONFIG", default=None)
@click.option("--webhook-port", envvar="RUNNERFLEET_WEBHOOK_PORT", type=int, default=8080)
@click.option("--metrics-port", envvar="RUNNERFLEET_METRICS_PORT", type=int, default=9090)
def listen(
    namespace: str, name: str, kubeconfig: str | None, webhook_port: int, metrics_port: int
) -> None:
    """Run a team's listener: poll GitHub, serve webhooks, write demand."""
    import asyncio

    from runnerfleet.listener.main import ListenerOptions, run

    _setup_logging()
    options = ListenerOptions(namespace, name, kubeconfig, webhook_port, metrics_port)
    asyncio.run(run(options))


@main.command("webhook-relay")
@click.option(
    "--secret-namespace", envvar="RUNNERFLEET_NAMESPACE", required=True,
    help="Namespace of the installation's webhook Secret (the relay's own).",
)  # fmt: skip
@click.option(
    "--secret-name", envvar="RUNNERFLEET_RELAY_SECRET_NAME", required=True,
    help="Secret holding the organisation (or App) webhook's secret.",
)  # fmt: skip
@click.option(
    "--secret-key", envvar="RUNNERFLEET_RELAY_SECRET_KEY", default=c.SECRET_KEY_WEBHOOK,
    show_default=True, help="Key of that Secret.",
)  # fmt: skip
@click.option("--kubeconfig", envvar="RUNNERFLEET_KUBECONFIG", default=None)
@click.option("--webhook-port", envvar="RUNNERFLEET_WEBHOOK_PORT", type=int, default=8080)
@click.option("--metrics-port", envvar="RUNNERFLEET_METRICS_PORT", type=int, default=9090)
@click.option(
    "--forward-timeout", envvar="RUNNERFLEET_RELAY_FORWARD_TIMEOUT", type=float, default=5.0,
    show_default=True, help="Seconds one forward to a team's listener may take.",
)  # fmt: skip
def webhook_relay(
    secret_namespace: str,
    secret_name: str,
    secret_key: str,
    kubeconfig: str | None,
    webhook_port: int,
    metrics_port: int,
    forward_timeout: float,
) -> None:
    """Receive one organisation webhook and fan each delivery out to the teams' listeners."""
    from runnerfleet.relay.main import RelayOptions, run

    _setup_logging()
    options = RelayOptions(
        secret_namespace, secret_name, secret_key, kubeconfig, webhook_port, metrics_port,
        forward_timeout,
    )  # fmt: skip
    asyncio.run(run(options))


@main.command("convert")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write the manifests here (default: stdout).",
)  # fmt: skip
@click.option(
    "--team", default=None, help="Team of every converted scale set (default: its namespace)."
)
@click.option(
    "--namespace", default=None, help="Namespace of every output object (default: the source's)."
)
@click.option(
    "--github-url", default="https://github.com", show_default=True,
    help="GitHub (or GHES) base URL for legacy RunnerDeployments, which name only org/repo.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print manifests and findings as JSON.")
def convert_arc(
    files: tuple[Path, ...], output: Path | None, team: str | None, namespace: str | None,
    github_url: str, as_json: bool,
) -> None:  # fmt: skip
    """Convert ARC configuration (AutoscalingRunnerSet manifests, gha-runner-scale-set values,
    RunnerDeployment + HorizontalRunnerAutoscaler) into runnerfleet manifests.

    Exit code: 0 lossless, 1 converted with warnings (unmapped keys on stderr), 2 bad input.
    """
    import yaml

    from runnerfleet.planning import convert as conv

    inputs = []
    for path in files:
        try:
            inputs.append((str(path), list(yaml.safe_load_all(path.read_text()))))
        except (OSError, yaml.YAMLError) as err:
            _err.print(f"runnerfleet: error: {path}: {err}", markup=False)
            sys.exit(2)
    options = conv.ConvertOptions(team=team, namespace=namespace, github_url=github_url)
    try:
        result = conv.convert(inputs, options)
    except conv.ConvertError as err:
        _err.print(f"runnerfleet: error: {err}", markup=False)
        sys.exit(2)
    for note in result.notes:
        _err.print(f"note: {note}", markup=False)
    for warning in result.warnings:
        _err.print(f"warning: {warning}", markup=False)
    text = (
        json.dumps(result.to_json(), indent=2) + "\n"
        if as_json
        else conv.render_yaml(result, [str(f) for f in files])
    )
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    sys.exit(0 if result.lossless else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
