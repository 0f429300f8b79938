"""Teams in the domain and the CLI: areas (polygons, geodesic circles), kinds, codes (one-time, expiring, raced),
team scoping, the queue order, unreachable members, escalation chains and their settings, and `waystation teams`."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from geographiclib.geodesic import Geodesic
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import select

from bot import cli_teams
from bot.config import ConfigError, load_settings
from bot.database import Database
from bot.escalation import Step, chain_for, step_due, validate_chain
from models import cases, outbox, staff, teams, users
from models.cases import Case
from models.staff import Role
from models.teams import AreaError, CodeKind, Team

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[119.9, 31.7], [120.0, 31.7], [120.0, 31.8], [119.9, 31.8], [119.9, 31.7]]],
}
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


# -- areas and kinds ------------------------------------------------------------------------------------------------


def test_polygon_areas_from_geometry_feature_and_collection() -> None:
    team = Team(name="A", area=teams.parse_area(SQUARE))
    assert team.covers(31.75, 119.95) and not team.covers(31.85, 119.95) and not team.covers(31.75, 120.05)
    feature = teams.parse_area({"type": "Feature", "properties": {}, "geometry": SQUARE})
    assert feature["type"] == "Polygon"
    east = {"type": "Polygon", "coordinates": [[[121, 31], [122, 31], [122, 32], [121, 32], [121, 31]]]}
    both = teams.parse_area(
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": g, "properties": None} for g in (SQUARE, east)],
        }
    )
    team = Team(name="B", area=both)
    assert both["type"] == "MultiPolygon" and team.covers(31.5, 121.5) and team.covers(31.75, 119.95)
    assert team.has_area and Team(name="C").has_area is False and not Team(name="C").covers(31.75, 119.95)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"type": "Point", "coordinates": [119.9, 31.7]}, "Polygon or MultiPolygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]}, "not valid"),  # a bow tie
        ({"type": "Polygon", "coordinates": [[[31.7, 200], [31.8, 200], [31.8, 201], [31.7, 200]]]}, "longitude"),
        ({"type": "Polygon", "coordinates": "nope"}, "not a valid GeoJSON"),
        ({"type": "FeatureCollection", "features": []}, "no features"),
        ({"type": "FeatureCollection", "features": [SQUARE]}, "expected GeoJSON Features"),
        ([1, 2], "expected a GeoJSON object"),
    ],
)
def test_bad_areas_are_refused_with_a_reason(raw: Any, reason: str) -> None:
    with pytest.raises(AreaError, match=reason):
        teams.parse_area(raw)


def test_circles_use_geodesic_distance() -> None:
    team = Team(name="R", center_lat=45.0, center_lon=126.0, radius_m=1000.0)  # Harbin-ish, high latitude
    for azimuth in (0, 90, 180, 270, 45):
        inside = Geodesic.WGS84.Direct(45.0, 126.0, azimuth, 999.0)
        outside = Geodesic.WGS84.Direct(45.0, 126.0, azimuth, 1001.0)
        assert team.covers(inside["lat2"], inside["lon2"]), azimuth
        assert not team.covers(outside["lat2"], outside["lon2"]), azimuth
    for lat, lon, radius in ((91, 0, 10), (0, 181, 10), (0, 0, 0), (0, 0, 2_000_000)):
        with pytest.raises(AreaError):
            teams.check_circle(lat, lon, radius)


def test_kinds() -> None:
    request = Case(idempotency_key="k", categories=["food", "bed"])
    report = Case(idempotency_key="r", kind="report", categories=[])
    assert Team(name="all").takes(request) and Team(name="all").takes(report)
    assert Team(name="food", kinds=["food"]).takes(request) and not Team(name="food", kinds=["food"]).takes(report)
    assert Team(name="out", kinds=["report"]).takes(report) and not Team(name="med", kinds=["medical"]).takes(request)


# -- escalation chains ----------------------------------------------------------------------------------------------


def test_step_times_and_repeats() -> None:
    steps = [Step(timedelta(minutes=10), ("group",)), Step(timedelta(minutes=20), ("coordinators",))]
    base = NOW
    assert [step_due(steps, timedelta(minutes=30), base, i) for i in range(4)] == [
        base + timedelta(minutes=m) for m in (10, 20, 50, 80)
    ]
    assert step_due(steps, None, base, 2) is None and step_due([], timedelta(minutes=5), base, 0) is None


@given(st.lists(st.integers(1, 600), min_size=1, max_size=6, unique=True), st.integers(1, 120))
def test_steps_come_in_order(minutes: list[int], repeat: int) -> None:
    steps = [Step(timedelta(minutes=m), ("group",)) for m in sorted(minutes)]
    times = [step_due(steps, timedelta(minutes=repeat), NOW, i) for i in range(len(steps) + 3)]
    assert all(a is not None and b is not None and a < b for a, b in itertools.pairwise(times))


def test_chain_validation_and_fallback(caplog: pytest.LogCaptureFixture) -> None:
    assert validate_chain([{"after_minutes": 5, "notify": ["team", "team", "group"]}]) == [
        {"after_minutes": 5, "notify": ["team", "team", "group"]}
    ]
    for bad, message in (
        ([{"after_minutes": 10, "notify": ["group"]}, {"after_minutes": 5, "notify": ["team"]}], "increasing"),
        ([{"after_minutes": 10, "notify": ["everyone"]}], "escalation 0.notify.0"),
        ([{"after_minutes": 0, "notify": ["group"]}], "after_minutes"),
        ([{"after_minutes": 5, "notify": []}], "notify"),
        ({"after_minutes": 5}, "escalation"),
    ):
        with pytest.raises(ValueError, match=message):
            validate_chain(bad)
    settings = load_settings(None)
    default = chain_for(settings, None)
    assert [(s.after, s.notify) for s in default] == [
        (timedelta(minutes=10), ("group", "on_call")),
        (timedelta(minutes=20), ("coordinators",)),
        (timedelta(minutes=40), ("default_team",)),
    ]
    own = chain_for(settings, Team(id=1, name="x", escalation=[{"after_minutes": 3, "notify": ["team", "team"]}]))
    assert [(s.after, s.notify) for s in own] == [(timedelta(minutes=3), ("team",))]
    broken = chain_for(settings, Team(id=7, name="y", escalation=[{"after_minutes": "soon"}]))
    assert broken == default and "team 7: its escalation chain is not valid" in caplog.text


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        (
            {
                "escalation": {
                    "chain": [{"after_minutes": 20, "notify": ["group"]}, {"after_minutes": 10, "notify": ["group"]}]
                }
            },
            "escalation",
        ),
        ({"escalation": {"remind_claimer_after_hours": 8, "release_claim_after_hours": 4}}, "escalation"),
        ({"escalation": {"chain": [{"after_minutes": 10, "notify": ["nobody"]}]}}, "escalation.chain.0.notify.0"),
        ({"escalation": {"out_of_hours": "sleep"}}, "escalation.out_of_hours"),
        ({"teams": {"daily_check_at": "8am"}}, "teams.daily_check_at"),
        ({"teams": {"default": "x"}}, "teams.default"),
    ],
)
def test_bad_settings_name_the_key(sections: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}"):
        load_settings(None, **sections)


# -- the database side ----------------------------------------------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'teams.db'}")
    await database.upgrade()
    try:
        yield database
    finally:
        await database.dispose()


async def _team(db: Database, name: str, **area: Any) -> Team:
    async with db.session() as session:
        team, created = await teams.save(session, name)
        assert created
        if area:
            await teams.set_area(session, team, **area)
        await session.commit()
        return team


async def _case(db: Database, **fields: Any) -> Case:
    async with db.session() as session:
        case, _ = await cases.create(session, Case(idempotency_key=uuid.uuid4().hex, categories=["food"], **fields))
        await session.commit()
        return case


async def test_codes_are_one_time_and_expire(db: Database) -> None:
    team = await _team(db, "North")
    assert team.id is not None
    async with db.session() as session:
        invite = await teams.create_code(
            session, CodeKind.INVITE, team.id, now=NOW, valid_for=timedelta(hours=72), role=Role.RESPONDER
        )
        link = await teams.create_code(session, CodeKind.LINK, team.id, now=NOW, valid_for=timedelta(hours=1))
        await session.commit()
    assert len(f"invite_{invite.code}") <= 64 and len(link.code) == 10

    async def use(code: str, kind: CodeKind, by: int, at: datetime) -> bool:
        async with db.session() as session:
            spent = await teams.use_code(session, code, kind, by=by, now=at)
            await session.commit()
            return spent is not None

    assert not await use(invite.code, CodeKind.LINK, 1, NOW)  # the wrong kind
    assert sorted(await asyncio.gather(*(use(invite.code, CodeKind.INVITE, i, NOW) for i in range(5)))) == [
        False,
        False,
        False,
        False,
        True,
    ]
    assert not await use(link.code, CodeKind.LINK, 1, NOW + timedelta(hours=1))  # expired
    assert await use(link.code, CodeKind.LINK, 1, NOW + timedelta(minutes=59))


async def test_members_roles_scoping_and_the_queue(db: Database) -> None:
    north = await _team(db, "North", center=(31.80, 119.95), radius_m=6000)
    south = await _team(db, "South", geojson=SQUARE)
    desk = await _team(db, "Desk")
    assert north.id is not None and south.id is not None and desk.id is not None
    async with db.session() as session:
        await staff.add(session, 1, "Ada", Role.ADMIN)
        await teams.add_member(session, north, 1, "Ada", Role.RESPONDER)  # never demotes
        await teams.add_member(session, north, 2, "Alice", Role.RESPONDER)
        await teams.add_member(session, south, 3, "Bob", Role.RESPONDER)
        await teams.add_member(session, south, 4, "Cora", Role.COORDINATOR)
        await teams.add_member(session, north, 5, "Kim", Role.KEEPER)
        await staff.add(session, 6, "Lu", Role.RESPONDER)  # in no team
        await session.commit()
        assert (await staff.get(session, 1)).role == "admin"  # type: ignore[union-attr]
        assert [m.name for m in await teams.members(session, north.id)] == ["Ada", "Alice", "Kim"]

    in_north = await _case(db, lat=31.82, lon=119.95)
    in_south = await _case(db, lat=31.72, lon=119.95)
    nowhere = await _case(db)
    legacy = await _case(db)  # from before teams: routed to no team
    async with db.session() as session:
        for case in (in_north, in_south, nowhere):
            routed, reason = await teams.route(session, case, "Desk")
            assert case.id is not None
            await teams.assign(session, case.id, routed, reason)
        await session.commit()
        assert [t.name for t in await teams.teams_of(session, in_north.id or 0)] == ["North"]
        assert [t.name for t in await teams.teams_of(session, nowhere.id or 0)] == ["Desk"]

        async def may(person: int, case: Case) -> bool:
            member = await staff.get(session, person)
            assert member is not None and case.id is not None
            return await teams.may_act_on(session, member, case.id, "Desk")

        assert await may(2, in_north) and not await may(2, in_south) and not await may(2, nowhere)
        assert await may(3, in_south) and not await may(3, in_north)
        assert await may(4, in_north) and await may(1, in_south)  # a coordinator / an admin: any team
        assert not await may(5, in_north)  # keepers do not act on cases
        assert await may(6, nowhere) and not await may(6, in_north)  # no team: the default team's
        assert all([await may(p, legacy) for p in (2, 3, 6)])

        alice = await staff.get(session, 2)
        cora = await staff.get(session, 4)
        assert alice is not None and cora is not None
        assert await teams.visible_team_ids(session, alice, "Desk") == {north.id}
        assert await teams.visible_team_ids(session, cora, "Desk") is None
        assert await cases.claim(session, in_north.id or 0, 2, "Alice")
        await session.commit()
        newer = await _case(db, lat=31.83, lon=119.95)
        await teams.assign(session, newer.id or 0, [north], "area")
        await session.commit()
        queued = await teams.queue(session, {north.id})
        assert [c.id for c in queued] == [legacy.id, newer.id, in_north.id]  # unclaimed first, then oldest first

        # Removing a member takes them off the rota too.
        await teams.set_on_call(session, north.id, 0, 2)
        assert await teams.remove_member(session, north.id, 2)
        await session.commit()
        assert await teams.rota(session, north.id) == {}
        assert not await teams.remove_member(session, north.id, 2)


async def test_unreachable_members(db: Database) -> None:
    async with db.session() as session:
        await users.touch(session, 10, "en")
        await users.touch(session, 11, "en")
        await users.touch(session, 12, "en")
        for chat_id in (11, 12):
            await outbox.enqueue_message(session, chat_id, "hello")
        await session.commit()
        items = list((await session.exec(select(outbox.OutboxItem))).all())
    async with db.session() as session:
        for item in items:
            claimed = await outbox.claim(session, item.id or 0, lease=timedelta(seconds=60))
            assert claimed is not None
            if item.chat_id == 11:
                await outbox.mark_failed(session, claimed, error="forbidden:blocked")
            else:
                await outbox.mark_sent(session, claimed, 5)
    async with db.session() as session:
        assert await teams.unreachable(session, [10, 11, 12, 13]) == {11, 13}
        assert await teams.unreachable(session, []) == set()


# -- the CLI --------------------------------------------------------------------------------------------------------


def _cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="waystation")
    cli_teams.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    settings = load_settings(
        None, database={"url": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}, teams={"default_team": "Desk"}
    )
    code = args.handler(settings, args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_add_list_area_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(
        tmp_path, capsys, "teams", "add", "Wujin outreach", "--kinds", "food,bed,report", "--hours", "Mo-Fr 08:00-20:00"
    )
    assert code == 0 and out.startswith("team 'Wujin outreach' added (id 1)")
    assert "/linkteam " in out and 'it has no area yet: waystation teams set-area "Wujin outreach"' in out
    code, out, err = _cli(tmp_path, capsys, "teams", "add", "X", "--kinds", "food,cake")
    assert code == 1 and "--kinds: unknown cake" in err
    code, out, err = _cli(tmp_path, capsys, "teams", "add", "X", "--hours", "whenever")
    assert code == 1 and "unparseable opening hours" in err
    code, out, err = _cli(tmp_path, capsys, "teams", "add", "X", "--escalation", "[{")
    assert code == 1 and "--escalation: not valid JSON" in err
    code, out, err = _cli(
        tmp_path, capsys, "teams", "add", "X", "--escalation", '[{"after_minutes": 5, "notify": ["pager"]}]'
    )
    assert code == 1 and "escalation 0.notify.0" in err
    code, out, _ = _cli(
        tmp_path, capsys, "teams", "add", "Wujin outreach", "--escalation", '[{"after_minutes": 5, "notify": ["team"]}]'
    )
    assert code == 0 and out.startswith("team 'Wujin outreach' updated")

    area = tmp_path / "area.geojson"
    area.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": SQUARE}))
    assert _cli(tmp_path, capsys, "teams", "set-area", "Wujin outreach", "--geojson", str(area))[1].strip() == (
        "team 'Wujin outreach': area Polygon"
    )
    area.write_text("{ not json")
    code, _, err = _cli(tmp_path, capsys, "teams", "set-area", "1", "--geojson", str(area))
    assert code == 1 and "not valid JSON" in err
    code, _, err = _cli(tmp_path, capsys, "teams", "set-area", "1", "--center", "31.7,119.9")
    assert code == 1 and "--center needs --radius-km" in err
    code, out, _ = _cli(tmp_path, capsys, "teams", "set-area", "1", "--center", "31.7,119.9", "--radius-km", "5")
    assert out.strip() == "team 'Wujin outreach': area 31.70000,119.90000 r=5 km"
    code, _, err = _cli(tmp_path, capsys, "teams", "set-area", "Nope", "--clear")
    assert code == 1 and "no team 'Nope'" in err

    code, _, err = _cli(tmp_path, capsys, "teams", "add-member", "1", "555", "--role", "responder")
    assert code == 1 and "give their name with --person" in err
    assert (
        _cli(tmp_path, capsys, "teams", "add-member", "1", "555", "--role", "responder", "--person", "Wang Li")[0] == 0
    )
    code, out, _ = _cli(tmp_path, capsys, "teams", "list")
    assert "1\tWujin outreach\tgroup=-\tkinds=bed,food,report\tarea=31.70000,119.90000 r=5 km" in out
    assert "hours=Mo-Fr 08:00-20:00\tmembers=1\tescalation=own" in out and "\t555\tresponder\tWang Li" in out
    code, out, _ = _cli(tmp_path, capsys, "teams", "remove-member", "Wujin outreach", "555")
    assert code == 0 and "they are in no team now but still staff" in out
    assert _cli(tmp_path, capsys, "teams", "remove-member", "Wujin outreach", "555")[0] == 1
    code, out, _ = _cli(tmp_path, capsys, "teams", "link-code", "Wujin outreach")
    assert code == 0 and "/linkteam " in out
