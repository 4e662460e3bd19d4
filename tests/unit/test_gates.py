"""Who may decide a gate: subjects and groups are separate namespaces, the run's own caller may not
decide its gate unless the step allows it, and an empty list means anyone but that caller."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.gates import Gate, Gates

NOW = "2026-12-03T00:00:00+00:00"


def decide(approvers: list[str], approver: str, groups: list[str] | None = None, **gate: Any) -> dict[str, Any]:
    gates = Gates()
    gates.open["gate"] = Gate("gate", "Ship?", approvers, NOW, 60.0, **gate)
    gates.decide("approve", {"approver": approver, "groups": groups or []}, NOW)
    return gates.decisions[-1]


@pytest.mark.parametrize(
    ("approvers", "approver", "groups", "outcome"),
    [
        (["alice"], "alice", [], "accepted"),
        (["alice"], "bob", ["alice"], "refused"),  # a group called alice is not the subject alice
        (["group:ops"], "olga", ["ops"], "accepted"),
        (["group:ops"], "group:ops", [], "refused"),  # a subject spelt like a group entry is no member
        (["group:ops"], "group:ops", ["eng"], "refused"),
        (["group:ops", "alice"], "alice", [], "accepted"),
        ([], "anyone", [], "accepted"),
        ([], "", [], "refused"),
    ],
)
def test_subjects_and_groups_are_separate_namespaces(
    approvers: list[str], approver: str, groups: list[str], outcome: str
) -> None:
    assert decide(approvers, approver, groups)["outcome"] == outcome


@pytest.mark.parametrize("approvers", [[], ["erin"], ["group:eng"]])
def test_the_runs_own_caller_may_not_decide_its_gate(approvers: list[str]) -> None:
    refused = decide(approvers, "erin", ["eng"], owner="erin", allow_self=False)
    assert refused["outcome"] == "refused" and "started this run" in refused["problem"]
    assert decide(approvers, "erin", ["eng"], owner="erin", allow_self=True)["outcome"] == "accepted"
    if approvers != ["erin"]:
        assert decide(approvers, "ed", ["eng"], owner="erin", allow_self=False)["outcome"] == "accepted"
