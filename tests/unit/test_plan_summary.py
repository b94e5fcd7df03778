"""The plan summary and the danger rules, on plan JSON shaped like terraform's `show -json`."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.spec import parse_spec
from pipeline.stages.plan import change_counts, dangerous_changes, host_rows, render_summary

SPEC = parse_spec({"name": "demo", "target": "local", "replica_count": 2})


def change(rtype: str, index: str, *actions: str, name: str = "host", after: dict[str, Any] | None = None) -> dict:
    return {
        "address": f'{rtype}.{name}["{index}"]',
        "mode": "managed",
        "type": rtype,
        "name": name,
        "index": index,
        "change": {"actions": list(actions), "before": None, "after": after or {}},
    }


def test_a_plan_without_providers_has_no_resource_changes_and_no_danger() -> None:
    assert dangerous_changes({}, SPEC) == []
    assert change_counts({}) == {"add": 0, "change": 0, "destroy": 0}


@pytest.mark.parametrize(
    ("actions", "verb"),
    [(("delete",), "destroyed"), (("delete", "create"), "replaced"), (("create", "delete"), "replaced")],
)
def test_the_primary_destroyed_or_replaced_is_dangerous(actions: tuple[str, ...], verb: str) -> None:
    plan = {"resource_changes": [change("null_resource", "demo-primary", *actions)]}
    assert dangerous_changes(plan, SPEC) == [
        f'the primary demo-primary would be {verb} (null_resource.host["demo-primary"])'
    ]


def test_a_replica_removed_is_not_dangerous_but_a_data_volume_is() -> None:
    plan = {
        "resource_changes": [
            change("null_resource", "demo-replica-2", "delete"),
            change("aws_ebs_volume", "demo-replica-2", "delete", name="data"),
        ]
    }
    assert dangerous_changes(plan, SPEC) == [
        'data volume demo-replica-2 would be destroyed (aws_ebs_volume.data["demo-replica-2"])'
    ]


def test_counts_treat_a_replacement_as_one_add_and_one_destroy() -> None:
    plan = {
        "resource_changes": [
            change("null_resource", "demo-primary", "delete", "create"),
            change("null_resource", "demo-replica-1", "update"),
            change("null_resource", "demo-replica-2", "no-op"),
            {**change("aws_ami", "x", "read"), "mode": "data"},
        ]
    }
    assert change_counts(plan) == {"add": 1, "change": 1, "destroy": 1}


def test_host_rows_list_the_primary_first_with_role_and_action() -> None:
    plan = {
        "resource_changes": [
            change("aws_instance", "demo-replica-1", "create", after={"availability_zone": "us-east-1b"}),
            change("aws_instance", "demo-primary", "no-op", after={"availability_zone": "us-east-1a"}),
        ]
    }
    spec = parse_spec({"name": "demo", "target": "local", "instance_type": "m7g.large"})
    assert host_rows(plan, spec) == [
        {"name": "demo-primary", "role": "primary", "type": "m7g.large", "zone": "us-east-1a", "action": "no-op"},
        {"name": "demo-replica-1", "role": "replica", "type": "m7g.large", "zone": "us-east-1b", "action": "create"},
    ]


def test_the_summary_starts_with_the_danger_in_bold() -> None:
    plan = {"resource_changes": [change("null_resource", "demo-primary", "delete", "create")]}
    text = render_summary(plan, SPEC, destroy=False, manifest_sha256="f" * 64)
    assert text.startswith("## pgpipe plan: `demo` (target local)\n")
    body = [line for line in text.splitlines()[1:] if line.strip()]
    assert body[0].startswith("**DANGER: the primary demo-primary would be replaced")
    assert "**1 to add, 0 to change, 1 to destroy.**" in text
    assert "| demo-primary | primary | sandbox host | local | replace |" in text


def test_the_summary_says_when_there_is_nothing_to_do() -> None:
    assert "**No changes.**" in render_summary({}, SPEC, destroy=False, manifest_sha256="0" * 64)
