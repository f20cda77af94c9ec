"""Job-to-scale-set matching and webhook signatures (pure)."""

from __future__ import annotations

import pytest

from runnerfleet.listener.signature import sign, verify
from runnerfleet.planning.matching import Job, ScaleSetLabels, match

LINUX = ScaleSetLabels("ns", "linux", ("self-hosted", "linux"))
GPU = ScaleSetLabels("ns", "gpu", ("self-hosted", "linux", "gpu"))


def test_most_specific_scale_set_wins() -> None:
    jobs = [Job(1, ("linux",), "queued"), Job(2, ("linux", "GPU"), "queued")]
    result = match(jobs, [GPU, LINUX])
    assert result.assignment == {1: ("ns", "linux"), 2: ("ns", "gpu")}
    assert result.demand == {("ns", "linux"): 1, ("ns", "gpu"): 1}


def test_unmatched_and_finished_jobs() -> None:
    jobs = [
        Job(1, ("windows",), "queued"),
        Job(2, ("linux",), "completed"),
        Job(3, ("linux",), "in_progress"),
    ]
    result = match(jobs, [LINUX])
    assert result.unmatched == [1]
    assert result.demand == {("ns", "linux"): 1}


def test_ties_are_broken_by_namespace_then_name() -> None:
    a = ScaleSetLabels("ns", "b-set", ("linux",))
    b = ScaleSetLabels("ns", "a-set", ("linux",))
    assert match([Job(1, ("linux",), "queued")], [a, b]).assignment == {1: ("ns", "a-set")}


def test_every_scale_set_gets_a_demand_even_zero() -> None:
    assert match([], [LINUX, GPU]).demand == {("ns", "linux"): 0, ("ns", "gpu"): 0}


def test_githubs_published_test_vector_verifies() -> None:
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(secret, body) == expected
    assert verify(secret, body, expected)


def test_bad_or_missing_signatures_fail() -> None:
    secret, body = b"s3cret", b"{}"
    good = sign(secret, body)
    assert not verify(secret, body, None)
    assert not verify(secret, body, "")
    assert not verify(secret, body, good.replace("sha256=", "sha1="))
    assert not verify(secret, body + b" ", good)
    assert not verify(b"other", body, good)
    assert not verify(b"", body, sign(b"", body))


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reliability item 6: the comparison is hmac.compare_digest (constant time), so a forger
    cannot learn the signature byte by byte from response times; `==` would leak it."""
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    secret, body = b"s3cret", b"{}"
    good = sign(secret, body)
    assert verify(secret, body, good)
    assert not verify(secret, body, good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert len(calls) == 2, "every well-formed signature goes through compare_digest"
