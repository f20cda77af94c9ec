"""`runnerfleet convert` through a child process: exit codes 0 (lossless), 1 (warnings on
stderr), 2 (bad input naming file and key); -o, --json and the YAML it writes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from runnerfleet import conventions as c
from tests.support.processes import error_lines, run_cli

ARC = Path(__file__).parent / "fixtures" / "arc"


def test_exit_codes_and_outputs(tmp_path: Path) -> None:
    out = tmp_path / "rf.yaml"
    clean = run_cli("convert", str(ARC / "values-lossless.yaml"), "--team", "web", "-o", str(out))
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout == ""
    assert not any(line.startswith("warning:") for line in error_lines(clean.stderr))
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert [d["kind"] for d in docs] == [c.TEAM_LISTENER_KIND, c.RUNNER_SCALE_SET_KIND]
    assert docs[1]["metadata"]["labels"][c.LABEL_TEAM] == "web"

    lossy = run_cli("convert", str(ARC / "values-lossy.yaml"), "--namespace", "ci")
    assert lossy.returncode == 1
    warnings = [ln for ln in error_lines(lossy.stderr) if ln.startswith("warning:")]
    assert f"warning: {ARC / 'values-lossy.yaml'}: proxy.http: not mapped" in "\n".join(warnings)
    assert len(warnings) == 12
    assert "NOT-A-REAL-KEY" not in lossy.stdout + lossy.stderr
    assert "#   ci/app-builders-github-config (keys: github_app_id" in lossy.stdout
    assert all(d["metadata"].get("namespace", "ci") == "ci"
               for d in yaml.safe_load_all(lossy.stdout) if d)  # fmt: skip

    as_json = run_cli("convert", str(ARC / "legacy.yaml"), "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["lossless"] is False
    mtu = {"source": f"{ARC / 'legacy.yaml'}#1", "path": "spec.template.spec.dockerMTU",
           "message": "not mapped (containerMode dind takes an image only)"}  # fmt: skip
    assert mtu in report["warnings"]
    assert len(report["manifests"]) == 4

    bad = run_cli("convert", str(ARC / "bad-url.yaml"))
    assert bad.returncode == 2
    assert error_lines(bad.stderr) == [
        f"runnerfleet: error: {ARC / 'bad-url.yaml'}: githubConfigUrl: 'not-a-url' is not an "
        "organisation, repository or enterprise URL"
    ]
    broken = tmp_path / "broken.yaml"
    broken.write_text("githubConfigUrl: [unclosed\n")
    unparsable = run_cli("convert", str(broken))
    assert unparsable.returncode == 2
    assert str(broken) in unparsable.stderr
