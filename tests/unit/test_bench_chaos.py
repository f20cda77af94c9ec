"""bench/chaos.py: records grouped into rows, the table, and the doc's markers."""

from __future__ import annotations

import json
from pathlib import Path

from bench import chaos


def _rec(scenario: str, form: str, convergence: float, lost: int = 0) -> dict[str, object]:
    return {"scenario": scenario, "form": form, "faults": "f", "jobs": 10, "lost": lost,
            "duplicates": 0, "orphans": 0, "convergence_s": convergence,
            "github_requests": 100, "github_counted": 3, "seed": 1, "found": "x",
            "details": {}}  # fmt: skip


def test_rows_group_by_scenario_and_form_in_issue_order() -> None:
    records = [_rec("10 later", "long", 1.0), _rec("2 b", "long", 5.0),
               _rec("2 b", "short", 1.0), _rec("2 b", "long", 7.5, lost=1)]  # fmt: skip
    summary = chaos.rows(records)
    assert [(r["scenario"], r["form"]) for r in summary] == [
        ("2 b", "short"), ("2 b", "long"), ("10 later", "long")]  # fmt: skip
    long_b = summary[1]
    assert (long_b["runs"], long_b["jobs"], long_b["lost"]) == (2, 20, 1)
    assert long_b["convergence_s"] == "5.0 to 7.5"
    assert summary[0]["convergence_s"] == "1.0"


def test_the_table_replaces_only_the_text_between_the_markers() -> None:
    doc = f"# R\n\nbefore\n\n{chaos.BEGIN}\nold | table\n{chaos.END}\n\nafter\n"
    new = chaos.replace_table(doc, "| new |")
    assert "old | table" not in new
    assert new.startswith("# R\n\nbefore\n\n")
    assert new.endswith(f"{chaos.END}\n\nafter\n")
    assert f"{chaos.BEGIN}\n| new |\n{chaos.END}" in new
    appended = chaos.replace_table("# R\n", "| t |")
    assert appended.endswith(f"{chaos.BEGIN}\n| t |\n{chaos.END}\n")


def test_main_writes_json_and_doc(tmp_path: Path) -> None:
    records = tmp_path / "r.jsonl"
    records.write_text("\n".join(json.dumps(_rec("1 a", "short", 2.0)) for _ in range(2)) + "\n")
    out, doc = tmp_path / "c.json", tmp_path / "d.md"
    assert chaos.main([str(records), "--json", str(out), "--doc", str(doc)]) == 0
    written = json.loads(out.read_text())
    assert written["summary"][0]["runs"] == 2
    assert len(written["records"]) == 2
    assert "| 1 a | short | 2 | f | 20 | 0 | 0 | 0 | 2.0 | 100 (3) | x |" in doc.read_text()


def test_main_refuses_an_empty_record(tmp_path: Path) -> None:
    empty = tmp_path / "none.jsonl"
    assert chaos.main([str(empty), "--json", str(tmp_path / "c.json")]) == 1
    assert not (tmp_path / "c.json").exists()
