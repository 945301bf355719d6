"""An inject's `to`: role names, `all`, and the groups of one kind (`parties`, `mediators`,
`observers`), which no role may be named."""

from __future__ import annotations

import pytest

from backchannel.exercise import ScenarioError, due, parse_scenario

ROLES = "".join(
    f'[[roles]]\nname = "{name}"\nkind = "{kind}"\ntitle = "{name}"\nbrief = "."\n'
    for name, kind in (("kennedy", "party"), ("u-thant", "mediator"), ("press", "observer"))
)
SCENARIO = f"""
schema = 1
[exercise]
name = "groups"
title = "Groups"
brief = "."
[clock]
start = "1962-10-22T08:00:00-04:00"
{ROLES}
[[injects]]
at = "1962-10-22T09:00:00-04:00"
to = ["observers"]
title = "For the press"
text = "."
[[injects]]
at = "1962-10-22T09:00:00-04:00"
to = ["parties", "u-thant"]
title = "For the parties and U Thant"
text = "."
[[injects]]
at = "1962-10-22T09:00:00-04:00"
to = ["all"]
title = "For everyone"
text = "."
"""


def test_each_role_gets_what_its_name_kind_or_all_addresses() -> None:
    scenario = parse_scenario(SCENARIO)
    later = scenario.injects[0].at_ms
    got = {}
    for role in scenario.roles:
        got[role.name] = sorted(i.title for i in due(scenario.injects, role, later))
        assert due(scenario.injects, role, later - 1) == []
    assert got == {
        "kennedy": ["For everyone", "For the parties and U Thant"],
        "u-thant": ["For everyone", "For the parties and U Thant"],
        "press": ["For everyone", "For the press"],
    }


@pytest.mark.parametrize("name", ["all", "parties", "mediators", "observers"])
def test_no_role_takes_a_group_address_for_its_name(name: str) -> None:
    with pytest.raises(ScenarioError, match="addresses a group"):
        parse_scenario(SCENARIO.replace('name = "press"', f'name = "{name}"'))


def test_an_inject_to_an_unknown_group_is_refused() -> None:
    with pytest.raises(ScenarioError, match="not a role"):
        parse_scenario(SCENARIO.replace('["observers"]', '["journalists"]'))
