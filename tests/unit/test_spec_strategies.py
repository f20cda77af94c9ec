"""The generated-spec strategies (tests/support/specs.py): reproducible, every fault drawn,
each fault applied where it says."""

from __future__ import annotations

import re
from collections import Counter

from tests.support.specs import (
    ACCEPT,
    KINDS,
    NAME,
    POOL,
    REFUSE,
    RSS,
    TL,
    Context,
    GenSpec,
    draw_specs,
)

CTX = Context("http://127.0.0.1:1/acme")


def _dig(body: dict[str, object], path: str) -> object:
    node: object = body
    for key in path.split("."):
        assert isinstance(node, dict), (path, body)
        node = node.get(key, "<absent>")
    return node


def test_the_same_seed_draws_the_same_specs_and_another_seed_others() -> None:
    assert draw_specs(CTX, 40, 11) == draw_specs(CTX, 40, 11)
    assert draw_specs(CTX, 40, 11) != draw_specs(CTX, 40, 12)


def test_specs_are_named_in_order_and_unique() -> None:
    specs = draw_specs(CTX, 60, 3, prefix="b")
    plain = [s.name for s in specs if s.field != "metadata.name"]
    assert len(set(plain)) == len(plain)
    assert all(NAME not in s.name for s in specs)
    assert specs[0].name.startswith("b0")


def test_five_hundred_specs_cover_every_kind_and_most_faults() -> None:
    specs = draw_specs(CTX, 500, 5)
    kinds = Counter(s.kind for s in specs)
    assert set(kinds) == {RSS, TL, POOL}
    assert min(kinds.values()) > 50  # measured: 74 pools in 500 (hypothesis favours the first)
    catalogue = {name for _, faults in KINDS.values() for name, *_ in faults}
    drawn = {s.fault for s in specs}
    assert len(drawn) >= 0.7 * len(catalogue), sorted(catalogue - drawn)
    share = sum(s.fault == "none" for s in specs) / len(specs)
    assert 0.1 < share < 0.5, share


def test_plausible_specs_point_at_the_context_and_are_expected_accepted() -> None:
    for spec in (s for s in draw_specs(CTX, 200, 8) if s.fault == "none"):
        assert spec.expect == ACCEPT
        assert spec.field is None
        if spec.kind in (RSS, TL):
            assert spec.body["spec"]["github"]["configUrl"] == CTX.config_url
            assert spec.body["spec"]["github"]["secretRef"] == {"name": "github-app"}
        if spec.kind == RSS:
            spec_ = spec.body["spec"]
            assert 0 <= spec_["minRunners"] <= spec_["maxRunners"]


def _broken(spec: GenSpec) -> bool:
    """The body really carries its fault at its field."""
    assert spec.field is not None
    if spec.field == "metadata.name":
        # Too long, or not a DNS label (a trailing "-" is one of the drawn faults).
        return len(spec.name) > 40 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", spec.name)
    if "<" in spec.field:
        return False  # a placeholder left unresolved: a bug in the catalogue
    value = _dig(spec.body, spec.field)
    if spec.fault == "min-above-max":
        return int(spec.body["spec"]["minRunners"]) > int(spec.body["spec"]["maxRunners"])
    return value != "<absent>" or "absent" in spec.fault


def test_each_fault_is_applied_at_the_field_it_names() -> None:
    faulty = [s for s in draw_specs(CTX, 400, 21) if s.fault != "none"]
    assert faulty
    wrong = [(s.fault, s.field) for s in faulty if not _broken(s)]
    assert wrong == []


def test_refused_faults_name_a_spec_or_metadata_field() -> None:
    for spec in draw_specs(CTX, 300, 4):
        if spec.expect == REFUSE:
            assert spec.field is not None
            assert spec.field.split(".")[0] in ("spec", "metadata"), spec
