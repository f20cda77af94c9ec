"""Turn the chaos suite's records into bench/chaos.json and the table in docs/reliability.md.

`make chaos` runs every scenario at full size (`pytest -m chaos`); each scenario appends one
JSON line (tests/support/chaos.py, `Outcome`) to a records file. This script groups the lines
by scenario and form, writes them with the commit and machine to a JSON file, and replaces the
table between the markers in the doc:

    python bench/chaos.py RECORDS.jsonl --json bench/chaos.json --doc docs/reliability.md

Several records of one scenario (repeated runs, or files concatenated) become one row with the
run count and the spread (min to max) of the timings.

Layer: tooling. Reads and writes local files; runs `git` for the commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

BEGIN = "<!-- chaos-table:begin (bench/chaos.py writes this table; edit the script, not it) -->"
END = "<!-- chaos-table:end -->"
COLUMNS = ("scenario", "form", "runs", "faults injected", "jobs", "lost", "duplicates",
           "orphans", "convergence (s)", "GitHub requests (counted)", "found")  # fmt: skip


def load(path: Path) -> list[dict[str, Any]]:
    """The records, one JSON object per non-empty line."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def _span(values: list[float], digits: int = 1) -> str:
    low, high = min(values), max(values)
    if round(low, digits) == round(high, digits):
        return f"{low:.{digits}f}"
    return f"{low:.{digits}f} to {high:.{digits}f}"


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, form), ordered by scenario number then form (short first)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        groups[(rec["scenario"], rec["form"])].append(rec)
    out = []
    for (scenario, form), recs in sorted(groups.items(), key=lambda kv: _order(*kv[0])):
        out.append({
            "scenario": scenario, "form": form, "runs": len(recs),
            "faults": recs[-1]["faults"],
            "jobs": sum(r["jobs"] for r in recs),
            "lost": sum(r["lost"] for r in recs),
            "duplicates": sum(r["duplicates"] for r in recs),
            "orphans": sum(r["orphans"] for r in recs),
            "convergence_s": _span([r["convergence_s"] for r in recs]),
            "github_requests": _span([r["github_requests"] for r in recs], 0),
            "github_counted": _span([r["github_counted"] for r in recs], 0),
            "found": next((r["found"] for r in reversed(recs) if r.get("found")), ""),
            "seeds": [r.get("seed") for r in recs],
        })  # fmt: skip
    return out


def _order(scenario: str, form: str) -> tuple[int, str, int]:
    number = scenario.split(" ", 1)[0]
    return (int(number) if number.isdigit() else 99, scenario, 0 if form == "short" else 1)


def table(summary: list[dict[str, Any]]) -> str:
    """The markdown table (no markers)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in summary:
        cells = (r["scenario"], r["form"], r["runs"], r["faults"], r["jobs"], r["lost"],
                 r["duplicates"], r["orphans"], r["convergence_s"],
                 f"{r['github_requests']} ({r['github_counted']})", r["found"])  # fmt: skip
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def replace_table(doc: str, body: str) -> str:
    """`doc` with the text between the markers replaced by `body` (markers appended if absent)."""
    if BEGIN not in doc or END not in doc:
        return f"{doc.rstrip()}\n\n{BEGIN}\n{body}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--json", type=Path, default=Path("bench/chaos.json"))
    parser.add_argument("--doc", type=Path, default=Path("docs/reliability.md"))
    args = parser.parse_args(argv)
    records = load(args.records)
    if not records:
        print(f"no chaos records in {args.records}: nothing written", file=sys.stderr)
        return 1
    summary = rows(records)
    args.json.write_text(json.dumps({
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _commit(), "cpus": os.cpu_count(),
        "summary": summary, "records": records,
    }, indent=2) + "\n", encoding="utf-8")  # fmt: skip
    doc = args.doc.read_text(encoding="utf-8") if args.doc.exists() else "# Reliability\n"
    args.doc.write_text(replace_table(doc, table(summary)), encoding="utf-8")
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
