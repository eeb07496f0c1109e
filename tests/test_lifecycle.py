"""Base-model retirement: the dates in the model table, validate's error and warning, and
``vertex-tuner lifecycle`` over a local run store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from dataset_support import spec_with_chat_data
from records_support import run_record

from vertex_tuner import models
from vertex_tuner.cli import cli
from vertex_tuner.cli.lifecycle import alias_names, inventory
from vertex_tuner.errors import ConfigurationError, SpecError
from vertex_tuner.runstore import LocalBlobStore, RunStore
from vertex_tuner.spec import load_spec

RETIRES = dt.date(2027, 3, 1)
LIFE = models.Lifecycle("GA", "https://example.com/deprecations", retires=RETIRES)

#: A base in the table with a confirmed date, and one with none announced (whatever the table's
#: figures are when this runs: the tests follow them).
DATED = next(m for m in models.MODELS.values() if m.lifecycle.retires is not None)
UNDATED = next(
    m
    for m in models.MODELS.values()
    if m.lifecycle.retires is None and m.lifecycle.not_before is None
)
assert DATED.lifecycle.retires is not None
DATED_ON: dt.date = DATED.lifecycle.retires


def on(day: dt.date, life: models.Lifecycle = LIFE) -> models.Retirement:
    return models.Retirement("gemini-x", day, life)


# --- the table ----------------------------------------------------------------------------


def test_every_row_has_a_stage_a_source_and_an_as_of_date() -> None:
    for info in models.MODELS.values():
        life = info.lifecycle
        assert life.launch_stage in ("GA", "preview")
        assert life.source.startswith("https://")
        assert life.as_of <= dt.date(2026, 12, 2)
        assert not (life.retires and life.not_before)


@pytest.mark.parametrize(
    ("day", "days_left", "retired"),
    [
        (RETIRES - dt.timedelta(days=1), 1, False),
        (RETIRES, 0, True),
        (RETIRES + dt.timedelta(days=1), -1, True),
    ],
)
def test_the_retirement_day_itself_counts_as_retired(
    day: dt.date, days_left: int, retired: bool
) -> None:
    r = on(day)
    assert r.days_left == days_left
    assert r.retired is retired
    assert r.status() == ("retired" if retired else "retiring")


@pytest.mark.parametrize(("before", "within"), [(89, True), (90, True), (91, False)])
def test_within_90_days(before: int, within: bool) -> None:
    r = on(RETIRES - dt.timedelta(days=before))
    assert r.within(90) is within
    assert r.status(90) == ("retiring" if within else "ok")
    assert not r.retired


def test_the_message_names_the_date_the_source_and_what_to_do() -> None:
    message = on(RETIRES - dt.timedelta(days=10)).message
    assert "2027-03-01" in message and "in 10 days" in message
    assert "https://example.com/deprecations" in message
    assert f"read {LIFE.as_of.isoformat()}" in message
    assert "set base_model to a newer model" in message and "and submit" in message
    gone = on(RETIRES + dt.timedelta(days=3)).message
    assert "was retired on 2027-03-01" in gone


def test_an_announcement_without_a_date_has_no_days_left() -> None:
    life = models.Lifecycle("GA", "https://example.com/notice", not_before=RETIRES)
    early = on(RETIRES - dt.timedelta(days=200), life)
    assert early.days_left is None and not early.within(90) and early.status() == "ok"
    late = on(RETIRES + dt.timedelta(days=5), life)
    assert not late.retired and late.within(90) and late.status() == "retiring"
    assert "no earlier than 2027-03-01" in late.message
    assert "not yet confirmed" in late.message


def test_an_unknown_model_and_one_without_an_announcement() -> None:
    r = models.retirement("gemini-9-ultra", dt.date(2026, 12, 2))
    assert r.status() == "unknown" and not r.retired and r.days_left is None
    quiet = models.retirement(UNDATED.id, dt.date(2026, 12, 2))
    assert quiet.status() == "ok" and not quiet.within(3650)
    # A publisher prefix names the same row.
    assert models.retirement(f"publishers/google/models/{DATED.id}", DATED_ON).retired


def test_today_comes_from_the_variable_else_the_utc_date(monkeypatch: pytest.MonkeyPatch) -> None:
    assert models.today({"VERTEX_TUNER_TODAY": "2027-01-31"}) == dt.date(2027, 1, 31)
    assert models.today({}) == dt.datetime.now(dt.UTC).date()
    with pytest.raises(ConfigurationError, match="VERTEX_TUNER_TODAY"):
        models.today({"VERTEX_TUNER_TODAY": "31/01/2027"})
    monkeypatch.setenv("VERTEX_TUNER_TODAY", "2027-02-01")
    assert models.today() == dt.date(2027, 2, 1)


# --- validate -----------------------------------------------------------------------------


def spec_on(tmp_path: Path, base: str) -> Path:
    return spec_with_chat_data(
        tmp_path,
        f"name: support-tone\n# the base\nbase_model: {base}\ndataset:\n  train: data.jsonl\n"
        "  validation: 0.1\n",
        rows=120,
    )


def test_a_retired_base_is_a_spec_error_at_its_line(tmp_path: Path) -> None:
    path = spec_on(tmp_path, DATED.id)
    with pytest.raises(SpecError) as info:
        load_spec(path, today=DATED_ON)
    err = info.value
    assert err.location.line == 3
    assert err.location.field == "base_model"
    assert DATED_ON.isoformat() in err.message and DATED.lifecycle.source in err.message
    assert "set base_model to a newer model" in err.message
    # The day before, it still loads.
    assert load_spec(path, today=DATED_ON - dt.timedelta(days=1)).base_model == DATED.id


def test_validate_refuses_a_retired_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = spec_on(tmp_path, DATED.id)
    monkeypatch.setenv("VERTEX_TUNER_TODAY", (DATED_ON + dt.timedelta(days=1)).isoformat())
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}:3" in result.output or "spec.yaml:3" in result.output
    assert "was retired on" in result.output


def test_validate_warns_within_90_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = spec_on(tmp_path, DATED.id)
    monkeypatch.setenv("VERTEX_TUNER_TODAY", (DATED_ON - dt.timedelta(days=30)).isoformat())
    result = CliRunner().invoke(cli, ["validate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.output)
    assert doc["ok"] is True
    (warning,) = [w for w in doc["warnings"] if w["code"] == "base-retiring"]
    assert warning["line"] == 3 and warning["field"] == "base_model"
    assert "in 30 days" in warning["message"]
    assert doc["stats"]["counts_by_code"]["base-retiring"] == 1
    text = CliRunner().invoke(cli, ["validate", str(path)])
    assert "warning" in text.output and "base-retiring" in text.output


def test_validate_is_quiet_91_days_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = spec_on(tmp_path, DATED.id)
    monkeypatch.setenv("VERTEX_TUNER_TODAY", (DATED_ON - dt.timedelta(days=91)).isoformat())
    result = CliRunner().invoke(cli, ["validate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert not [w for w in orjson.loads(result.output)["warnings"] if w["code"] == "base-retiring"]


# --- lifecycle ----------------------------------------------------------------------------

TUNED_1 = "projects/p/locations/us-central1/models/1@1"
TUNED_2 = "projects/p/locations/us-central1/models/1@2"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """support-tone@production: a continuous-tuning run on a run tuned from the dated base;
    support-tone@canary: the parent itself; ticket-triage@production: an undated base;
    orphan@production: a tuned base whose lineage was not recorded."""
    root = tmp_path / "runs"
    runs = RunStore(LocalBlobStore(root))
    runs.save(run_record("r1", base_model=DATED.id, tuned_model=TUNED_1))
    runs.save(run_record("r2", base_model=TUNED_1, parent_run_id="r1", tuned_model=TUNED_2))
    runs.save(run_record("r3", spec_name="ticket-triage", base_model=UNDATED.id))
    runs.save(run_record("r4", spec_name="orphan", base_model=TUNED_1))
    runs.set_alias("support-tone", "production", "r2")
    runs.set_alias("support-tone", "canary", "r1")
    runs.set_alias("ticket-triage", "production", "r3")
    runs.set_alias("orphan", "production", "r4")
    return root


def lifecycle(store: Path, *args: str, today: dt.date, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("VERTEX_TUNER_TODAY", today.isoformat())
    return CliRunner().invoke(cli, ["lifecycle", "--registry", str(store), *args])


def rows_of(result: Any) -> dict[str, dict[str, Any]]:
    doc = orjson.loads(result.output)
    assert set(doc) == {"aliases", "exit_code"}
    assert doc["exit_code"] == result.exit_code
    return {f"{r['name']}@{r['alias']}": r for r in doc["aliases"]}


def test_lineage_through_a_continuous_tuning_parent(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = lifecycle(
        store, "--json", today=DATED_ON - dt.timedelta(days=10), monkeypatch=monkeypatch
    )
    assert result.exit_code == 0, result.output
    rows = rows_of(result)
    assert set(rows) == {
        "support-tone@production",
        "support-tone@canary",
        "ticket-triage@production",
        "orphan@production",
    }
    prod = rows["support-tone@production"]
    assert set(prod) >= {
        "name", "alias", "run_id", "tuned_model", "base_model", "retires", "days_left",
        "status", "action",
    }  # fmt: skip
    assert prod["run_id"] == "r2" and prod["tuned_model"] == TUNED_2
    assert prod["base_model"] == DATED.id
    assert prod["retires"] == DATED_ON.isoformat() and prod["retires_confirmed"] is True
    assert prod["days_left"] == 10 and prod["status"] == "retiring"
    assert "set base_model to a newer model" in prod["action"]
    assert rows["ticket-triage@production"]["status"] == "ok"
    orphan = rows["orphan@production"]
    assert orphan["status"] == "unknown" and orphan["base_model"] is None
    assert "parent_run_id" in orphan["action"]


def test_retired_after_the_date(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = lifecycle(store, "--json", today=DATED_ON, monkeypatch=monkeypatch)
    rows = rows_of(result)
    assert rows["support-tone@canary"]["status"] == "retired"
    assert rows["support-tone@canary"]["days_left"] == 0


@pytest.mark.parametrize(("before", "code"), [(91, 0), (90, 1), (89, 1), (-1, 1)])
def test_fail_within_exit_codes(
    store: Path, monkeypatch: pytest.MonkeyPatch, before: int, code: int
) -> None:
    today = DATED_ON - dt.timedelta(days=before)
    result = lifecycle(
        store, "--json", "--fail-within", "90d", today=today, monkeypatch=monkeypatch
    )
    assert result.exit_code == code, result.output
    assert rows_of(result)  # the document is printed whatever the exit code
    # Without the flag the command reports and exits 0.
    assert lifecycle(store, "--json", today=today, monkeypatch=monkeypatch).exit_code == 0


def test_fail_within_takes_a_duration(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = lifecycle(store, "--fail-within", "soon", today=DATED_ON, monkeypatch=monkeypatch)
    assert result.exit_code == 2
    assert "--fail-within" in result.output


def test_a_spec_limits_it_to_its_name(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spec's own base is retired by then: lifecycle still reports instead of refusing it.
    (tmp_path / "job").mkdir()
    spec = spec_on(tmp_path / "job", DATED.id)
    result = lifecycle(
        store, str(spec), "--json", today=DATED_ON + dt.timedelta(days=1), monkeypatch=monkeypatch
    )
    assert result.exit_code == 0, result.output
    assert set(rows_of(result)) == {"support-tone@production", "support-tone@canary"}


def test_the_plain_output_when_piped(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = lifecycle(store, today=DATED_ON - dt.timedelta(days=10), monkeypatch=monkeypatch)
    assert result.exit_code == 0
    assert f"support-tone@production\tr2\t{DATED.id}\t{DATED_ON.isoformat()}\t10\tretiring" in (
        result.stdout
    )


def test_an_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = lifecycle(tmp_path / "none", "--json", today=DATED_ON, monkeypatch=monkeypatch)
    assert result.exit_code == 0
    assert orjson.loads(result.output) == {"aliases": [], "exit_code": 0}


def test_reads_are_bounded(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One alias file per name, one record per run served or stepped through, each read once."""
    runs = RunStore(LocalBlobStore(store))
    alias_reads: list[str] = []
    record_reads: list[str] = []
    aliases, get = runs.aliases, runs.get
    monkeypatch.setattr(runs, "aliases", lambda name: alias_reads.append(name) or aliases(name))
    monkeypatch.setattr(runs, "get", lambda run_id: record_reads.append(run_id) or get(run_id))
    names = alias_names(runs)
    assert names == ["orphan", "support-tone", "ticket-triage"]
    rows = inventory(runs, names, DATED_ON)
    assert len(rows) == 4
    assert sorted(alias_reads) == names
    assert sorted(record_reads) == ["r1", "r2", "r3", "r4"]
