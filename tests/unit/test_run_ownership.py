"""Who may reach a run: the shape of a run id (checked before Temporal is asked), the owner a run
records, and the rules that let operators reach other callers' runs."""

from __future__ import annotations

import re

import pytest

from vmcp.composite.contracts import RUN_ID_PATTERN, run_owner
from vmcp.config.auth import AuthorizationConfig
from vmcp.security.authorization import Authorizer

# one fixed uuid4: the same test ids in every pytest worker
UUID = "5f0c2a9e-7d41-4b8a-9c3e-1e2f3a4b5c6d"

RUN_ID = re.compile(RUN_ID_PATTERN)


@pytest.mark.parametrize("run_id", [f"vmcp-deploy-{UUID}", f"vmcp-investigate_image-{UUID}", f"vmcp-a-b-c-{UUID}"])
def test_run_ids_vmcp_makes_have_the_run_id_shape(run_id: str) -> None:
    assert RUN_ID.fullmatch(run_id)


@pytest.mark.parametrize(
    "run_id",
    [
        "some-other-apps-workflow",
        "vmcp-deploy",
        f"vmcp--{UUID}",
        f"vmcp-deploy-{UUID}/../x",
        f"vmcp-deploy-{UUID.upper()}",
        f"xvmcp-deploy-{UUID}",
        f"vmcp-de ploy-{UUID}",
        "",
    ],
)
def test_anything_else_is_not_a_run_id(run_id: str) -> None:
    assert not RUN_ID.fullmatch(run_id)


def test_a_run_records_its_callers_issuer_and_subject_only() -> None:
    caller = {"subject": "erin", "issuer": "https://idp", "groups": ["eng"], "scopes": ["a"], "client": "x"}
    assert run_owner(caller) == {"issuer": "https://idp", "subject": "erin"}
    assert run_owner({"subject": "anonymous", "client": "ide"}) == {"issuer": None, "subject": "anonymous"}


def test_only_a_runs_any_rule_reaches_other_callers_runs() -> None:
    rules = Authorizer(
        AuthorizationConfig.model_validate(
            {
                "default": "allow",
                "rules": [
                    {"tools": ["vmcp_run_cancel"], "runs": "any", "effect": "deny", "when": {"subjects": ["intern"]}},
                    {"tools": ["vmcp_run_*"], "runs": "any", "when": {"groups": ["sre"]}},
                    {"tools": ["*"]},
                ],
            }
        )
    )
    sre = {"subject": "oscar", "groups": ["sre"]}
    assert rules.reaches_others_runs(sre, "vmcp_run_status") and rules.reaches_others_runs(sre, "vmcp_run_cancel")
    assert not rules.reaches_others_runs({"subject": "erin", "groups": ["eng"]}, "vmcp_run_status")  # default allow
    assert not rules.reaches_others_runs({"subject": "intern", "groups": ["sre"]}, "vmcp_run_cancel")
    assert not Authorizer(None).reaches_others_runs(sre, "vmcp_run_status")  # no rules: nobody
