"""``adt inspect --dry-run`` reports what the worker would do, through the worker's own stages.

On SQLite and PostgreSQL: messages run through :func:`~cm_fhir.worker.dry_run.dry_run` first
(nothing may be written), then through the real worker; the inbox state and reason the dry run
reported for each message must be the ones the worker settled it in, and the cases the dry run
showed must be the ones the worker committed. MSH-11 T/D messages are not applied unless allowed;
a message without a visit ends ``needs_attention``. The CLI test runs the command on a file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.worker.dry_run import dry_run, render
from inbox_fixtures import Database
from worker_fixtures import cases, inbox_messages, ingest, rows, settle_worker
from workflow_messages import Visit, hours

V = Visit()
NO_VISIT = Visit(mrn="MRN0002", visit="")


def training(message: str) -> str:
    """The message with MSH-11 = T (training)."""
    return message.replace("|P|2.5.1", "|T|2.5.1", 1)


FEED = [
    V.raw("A01", "D1", hours(0)),
    training(Visit(mrn="MRN0003", visit="V300").raw("A01", "D2", hours(1))),
    NO_VISIT.raw("A01", "D3", hours(2)),
    V.raw("A02", "D4", hours(3), location="5NORTH"),
]


async def test_the_dry_run_reports_what_the_worker_then_does(
    database: Database, worker_engine: AsyncEngine
) -> None:
    effects = await dry_run(
        [m.encode() for m in FEED], database.url, search_path=database.search_path
    )
    assert await rows(worker_engine, cases) == []  # nothing written
    assert await rows(worker_engine, inbox_messages) == []
    reported = [(e.state, e.reason) for e in effects]
    assert [state for state, _ in reported] == [
        "processed",
        "ignored",
        "needs_attention",
        "processed",
    ]
    assert "MSH-11" in (reported[1][1] or "")
    assert effects[1].cases == ()
    assert [c.status_after for c in effects[0].cases] == ["active"]
    text = "\n".join(render(effects))
    assert "ignored: not applied: MSH-11 processing id T" in text
    assert "needs_attention: needs attention: no-visit-number (PV1-19)" in text
    (broken,) = await dry_run([b"MSH|^~\\&|X"], database.url, search_path=database.search_path)
    assert (broken.state, broken.cases) == ("failed", ())

    await ingest(worker_engine, FEED)
    await settle_worker(worker_engine)
    settled = [(r.state, r.reason) for r in await rows(worker_engine, inbox_messages)]
    assert settled == reported
    committed = {r.case_id: r.status for r in await rows(worker_engine, cases)}
    shown = {c.case_id: c.status_after for e in effects for c in e.cases}
    assert committed == shown


async def test_the_dry_run_applies_training_messages_when_allowed(
    database: Database, worker_engine: AsyncEngine
) -> None:
    effects = await dry_run(
        [training(V.raw("A01", "T1", hours(0))).encode()],
        database.url,
        search_path=database.search_path,
        apply_processing_ids={"P", "T"},
    )
    assert [(e.state, [c.status_after for c in e.cases]) for e in effects] == [
        ("processed", ["active"])
    ]


def test_the_cli_dry_run_honours_the_processing_id_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = tmp_path / "training.hl7"
    feed.write_text(training(V.raw("A01", "C1", hours(0))) + "\r", encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
    runner = CliRunner()
    for name in [n for n in __import__("os").environ if n.startswith("CM_FHIR_")]:
        monkeypatch.delenv(name)
    ignored = runner.invoke(app, ["adt", "inspect", "--dry-run", "--database-url", url, str(feed)])
    assert ignored.exit_code == 0, ignored.output
    assert "ignored: not applied: MSH-11 processing id T" in ignored.output
    assert "no case changes" in ignored.output
    monkeypatch.setenv("CM_FHIR_WORKER__APPLY_PROCESSING_IDS", "P,T")
    applied = runner.invoke(app, ["adt", "inspect", "--dry-run", "--database-url", url, str(feed)])
    assert applied.exit_code == 0, applied.output
    assert "ignored" not in applied.output
    assert "(new) -> active" in applied.output
