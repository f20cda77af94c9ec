"""Write docs/reference/crds.md from the generated crds/*.yaml (`make docs`); `--check` fails on
drift.

The CRDs are the source: every kind's names, scope and printer columns, then one table per
object level (the top level, `spec`, `status`, and each nested object or list item as its own
section with an anchor) giving each field's camelCase path, type, whether it is required, its
default, its validation (pattern, bounds, enum, list type, CEL rules with their messages) and
its description. Same YAML in, same Markdown out.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "crds"
DOCS = ROOT / "docs" / "reference" / "crds.md"

Schema = dict[str, Any]

HEADER = (
    "<!-- Generated from crds/*.yaml by tools/gen_crd_docs.py (`make docs`): "
    "do not edit by hand. -->\n"
)


@dataclass
class Section:
    """One object level: its path (e.g. `spec.github`, `spec.extraEgress[]`) and its rows."""

    path: str
    anchor: str
    description: str
    rows: list[list[str]] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- loading
def load_crds(crd_dir: Path = CRDS) -> list[dict[str, Any]]:
    """Every CRD under `crd_dir`: namespaced kinds first, then cluster-scoped, each by kind."""
    crds = []
    for path in sorted(crd_dir.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            doc["__file__"] = path.name
            crds.append(doc)
    return sorted(
        crds, key=lambda d: (d["spec"]["scope"] != "Namespaced", d["spec"]["names"]["kind"])
    )


# ---------------------------------------------------------------------------------- text helpers
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cell(text: str) -> str:
    """Table-cell safe: one line, pipes escaped (GFM removes the backslash, even in code)."""
    return _one_line(text).replace("|", "\\|")


_CODE_SPAN = re.compile(r"(`+)(.*?)\1")


def prose(text: str) -> str:
    """Schema text as Markdown: `<` and `>` outside code spans escaped (else `<name>` would
    vanish as an HTML tag)."""
    out, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        out.append(text[last : match.start()].replace("<", "&lt;").replace(">", "&gt;"))
        out.append(match.group(0))
        last = match.end()
    out.append(text[last:].replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out)


def code(value: str) -> str:
    """An inline code span that survives backticks inside `value`."""
    text = str(value)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def anchor_for(kind: str, path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{kind} {path}".lower()).strip("-")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------------------------- schema facts
def _is_object(schema: Schema) -> bool:
    return schema.get("type") == "object" and "properties" in schema


def type_of(schema: Schema) -> str:
    """A short type name: string, integer, []string, map[string]string, object, object
    (free-form)."""
    kind = schema.get("type", "")
    if kind == "array":
        return "[]" + type_of(schema.get("items") or {})
    if kind == "object":
        if "properties" in schema:
            return "object"
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return "map[string]" + type_of(extra)
        return "object (free-form)"
    return str(kind) if kind else "any"


def _bounds(schema: Schema, low: str, high: str, what: str) -> str | None:
    lo, hi = schema.get(low), schema.get(high)
    if lo is not None and hi is not None:
        return f"{what} {lo} to {hi}" if what else f"{lo} ≤ value ≤ {hi}"
    if lo is not None:
        return f"{what} ≥ {lo}" if what else f"≥ {lo}"
    if hi is not None:
        return f"{what} ≤ {hi}" if what else f"≤ {hi}"
    return None


def constraints(schema: Schema) -> list[str]:
    """The schema's own validation (not CEL), as short phrases in Markdown."""
    out: list[str] = []
    if "enum" in schema:
        out.append("one of " + ", ".join(code(str(v)) for v in schema["enum"]))
    if "pattern" in schema:
        out.append("pattern " + code(schema["pattern"]))
    if "format" in schema:
        out.append("format " + code(schema["format"]))
    for low, high, what in (
        ("minimum", "maximum", ""),
        ("minLength", "maxLength", "length"),
        ("minItems", "maxItems", "items"),
        ("minProperties", "maxProperties", "entries"),
    ):
        phrase = _bounds(schema, low, high, what)
        if phrase:
            out.append(phrase)
    if schema.get("exclusiveMinimum") is True or schema.get("exclusiveMaximum") is True:
        out.append("bounds exclusive")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        out.append("unique items (list-type `set`)")
    elif list_type:
        out.append(f"list-type {code(list_type)}")
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        out.append("any fields kept (not validated by the CRD)")
    items = schema.get("items")
    if isinstance(items, dict) and not _is_object(items):
        out += [f"each item: {c}" for c in constraints(items)]
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out += [f"each value: {c}" for c in constraints(extra)]
    return out


def cel_rule(rule: dict[str, Any]) -> str:
    """A CEL rule with its message (and field path and reason when set)."""
    text = f"CEL {code(_one_line(rule['rule']))}"
    if rule.get("message"):
        text += ': "' + prose(_one_line(rule["message"])) + '"'
    extras = []
    if rule.get("fieldPath"):
        extras.append(f"field {code(rule['fieldPath'])}")
    if rule.get("reason"):
        extras.append(f"reason {code(rule['reason'])}")
    if rule.get("messageExpression"):
        extras.append(f"message expression {code(_one_line(rule['messageExpression']))}")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _rule_target(rule: dict[str, Any]) -> str | None:
    """The direct child field a rule's fieldPath points into (`.webhook.secretRef` ->
    `webhook`), or None."""
    path = str(rule.get("fieldPath") or "")
    match = re.match(r"^\.([A-Za-z0-9_]+)", path)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------- sections
def standard_fields(group: str, version: str, kind: str) -> dict[str, str]:
    """Descriptions of the top-level fields every object has (the CRD leaves them bare)."""
    return {
        "apiVersion": code(f"{group}/{version}"),
        "kind": code(kind),
        "metadata": "Standard Kubernetes object metadata (name, labels, annotations, ...).",
    }


def _child_path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def object_sections(
    kind: str,
    schema: Schema,
    path: str,
    title_prefix: str = "",
    standard: dict[str, str] | None = None,
) -> list[Section]:
    """The section for the object at `path` followed, depth-first, by its nested objects'.

    `standard` describes the top level's apiVersion, kind and metadata."""
    standard = standard or {}
    section = Section(
        path=path,
        anchor=anchor_for(f"{title_prefix}{kind}", path or "top-level"),
        description=prose(_one_line(schema.get("description", ""))),
    )
    nested: list[Section] = []
    required = set(schema.get("required") or [])
    rules = list(schema.get("x-kubernetes-validations") or [])
    properties: dict[str, Schema] = schema.get("properties") or {}
    placed: set[int] = set()
    for name, prop in properties.items():
        child = _child_path(path, name)
        validation = constraints(prop)
        for i, rule in enumerate(rules):
            if _rule_target(rule) == name:
                validation.append(cel_rule(rule))
                placed.add(i)
        if not _is_object(prop):  # an object's own rules go to its section
            validation += [cel_rule(r) for r in prop.get("x-kubernetes-validations") or []]
        type_text = code(type_of(prop))
        target: Schema | None = None
        target_path = child
        if _is_object(prop):
            target = prop
        elif prop.get("type") == "array" and _is_object(prop.get("items") or {}):
            target = prop["items"]
            target_path = f"{child}[]"
        if target is not None:
            sub = object_sections(kind, target, target_path, title_prefix)
            nested += sub
            type_text += f" ([{target_path}](#{sub[0].anchor}))"
        description = prose(prop.get("description", ""))
        if not path and name in standard:  # apiVersion, kind, metadata: not in the schema
            type_text = code("ObjectMeta") if name == "metadata" else type_text
            description = description or standard[name]
        default = code(_json(prop["default"])) if "default" in prop else ""
        section.rows.append(
            [
                code(child),
                type_text,
                "yes" if name in required else "no",
                default,
                "<br>".join(validation),
                description,
            ]
        )
    section.rules = [cel_rule(r) for i, r in enumerate(rules) if i not in placed]
    return [section, *nested]


def _title(section: Section) -> str:
    return code(section.path) if section.path else "top level"


def _render_section(kind: str, section: Section) -> list[str]:
    lines = [f'<a id="{section.anchor}"></a>', f"### {kind}: {_title(section)}", ""]
    if section.description:
        lines += [section.description, ""]
    if section.rows:
        lines += [
            "| Field | Type | Required | Default | Validation | Description |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in section.rows]
        lines.append("")
    if section.rules:
        lines.append(f"Rules on {_title(section)} as a whole:")
        lines.append("")
        lines += [f"- {_one_line(rule)}" for rule in section.rules]
        lines.append("")
    return lines


def _render_kind(crd: dict[str, Any]) -> list[str]:
    spec = crd["spec"]
    names = spec["names"]
    kind = names["kind"]
    versions = spec["versions"]
    lines = [f'<a id="{anchor_for("kind", kind)}"></a>', f"## {kind}", ""]
    overview = [
        ("API group", code(spec["group"])),
        (
            "Versions",
            ", ".join(
                code(v["name"])
                + (" (served" if v.get("served") else " (not served")
                + (", storage)" if v.get("storage") else ")")
                for v in versions
            ),
        ),
        ("Scope", spec["scope"]),
        ("Plural / singular", f"{code(names['plural'])} / {code(names.get('singular', ''))}"),
        ("List kind", code(names.get("listKind", f"{kind}List"))),
        ("Short names", ", ".join(code(s) for s in names.get("shortNames") or []) or "none"),
        ("Categories", ", ".join(code(s) for s in names.get("categories") or []) or "none"),
        ("CRD", f"[crds/{crd['__file__']}](../../crds/{crd['__file__']})"),
    ]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {label} | {_cell(value)} |" for label, value in overview]
    lines.append("")
    multi = len(versions) > 1
    for version in versions:
        prefix = f"{version['name']} " if multi else ""
        if multi:
            lines += [f"### Version {code(version['name'])}", ""]
        subresources = sorted((version.get("subresources") or {}).keys())
        lines += [
            "Subresources: " + (", ".join(code(s) for s in subresources) or "none") + ".",
            "",
        ]
        columns = version.get("additionalPrinterColumns") or []
        lines += [f"Printer columns ({code('kubectl get ' + names['plural'])}):", ""]
        if columns:
            priority = any("priority" in col for col in columns)
            head = [
                "Column",
                "Type",
                "JSON path",
                *(["Priority"] if priority else []),
                "Description",
            ]
            lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            for col in columns:
                row = [col["name"], code(col["type"]), code(col["jsonPath"])]
                row += [str(col.get("priority", 0))] if priority else []
                row.append(col.get("description", ""))
                lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        else:
            lines.append("none")
        lines.append("")
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        standard = standard_fields(spec["group"], version["name"], kind)
        sections = object_sections(kind, schema, "", prefix, standard)
        lines += ["Object levels:", ""]
        lines += [f"- [{_title(s)}](#{s.anchor})" for s in sections]
        lines.append("")
        for section in sections:
            lines += _render_section(f"{prefix}{kind}", section)
    return lines


def render(crds: list[dict[str, Any]]) -> str:
    """The whole reference page for `crds` (as returned by `load_crds`)."""
    lines = [
        HEADER.rstrip("\n"),
        "# CRD reference",
        "",
        "Every field of runnerfleet's custom resources, generated from the CRDs in `crds/`",
        "(which are generated from the pydantic models, `make crds`). Field paths are camelCase,",
        "as in YAML; `[]` marks the items of a list. *Required* is the CRD's `required`; a",
        "default listed here is filled in by the apiserver (a field without one may still get",
        "a default from the operator when it reads the object: see the kind's guide in",
        "`docs/`). Rules under *Validation* are enforced at admission (`kubectl apply` gets a",
        "422 naming the field).",
        "",
    ]
    for crd in crds:
        names = crd["spec"]["names"]
        short = ", ".join(code(s) for s in names.get("shortNames") or [])
        lines.append(
            f"- [{names['kind']}](#{anchor_for('kind', names['kind'])}): "
            f"{crd['spec']['scope'].lower()}" + (f", short name {short}" if short else "")
        )
    lines.append("")
    for crd in crds:
        lines += _render_kind(crd)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def render_docs(crd_dir: Path = CRDS) -> str:
    """docs/reference/crds.md as it should be committed."""
    return render(load_crds(crd_dir))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    text = render_docs()
    if check:
        if not DOCS.exists() or DOCS.read_text() != text:
            print(f"CRD reference out of date with crds/*.yaml: {DOCS}; run `make docs`")
            return 1
        return 0
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)
    print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
