"""``cm-fhir outbox resend``: send outbox Bundles to the FHIR endpoints again. I/O edge.

Without ``--all`` the cases whose newest Bundle an endpoint refused (``failed``) are sent again;
with it every case, sent or not (after restoring an EHR, say). ``--endpoint``, ``--case`` and
``--since`` (ISO date or time, by when the row was enqueued) narrow the choice. Only the newest
Bundle of a case is sent, so an older snapshot never overwrites a newer one, and every write is
conditional on the business identifier, so nothing is duplicated. The rows are marked ``pending``
and then delivered here, with a progress bar, through the endpoints of the settings (the same
``--config``/environment as ``serve``; a running ``serve`` with the sync role may take some of
them: leases keep the two from writing one patient at once). ``--no-send`` only marks them.
Output is counts, never patient data.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cm_fhir.cli._app import app
from cm_fhir.cli.errors import fail
from cm_fhir.cli.options import StoreOptions, store_options
from cm_fhir.errors import CmFhirError
from cm_fhir.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


__all__ = ["outbox_app"]

outbox_app = typer.Typer(help="The outbox of FHIR writes.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            fail(f"--since: not an ISO date or time: {text[:40]!r}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def _resend(
    settings: Settings,
    *,
    every_state: bool,
    endpoint: str | None,
    case_id: str | None,
    since: datetime | None,
    send: bool,
) -> tuple[int, dict[str, int]]:
    from cm_fhir.service import check_database
    from cm_fhir.store.engine import engine_for
    from cm_fhir.store.outbox import mark_for_resend

    engine = engine_for(settings)
    try:
        await check_database(engine, settings, migrate=False)
        async with engine.begin() as connection:
            marked: int = await connection.run_sync(
                lambda c: mark_for_resend(
                    c,
                    datetime.now(UTC),
                    every_state=every_state,
                    endpoint=endpoint,
                    case_id=case_id,
                    since=since,
                )
            )
        endpoints = [e for e in settings.endpoints if endpoint is None or e.name == endpoint]
        if not send or not marked or not endpoints:
            return marked, {}
        return marked, await _deliver(engine, settings, endpoints, marked)
    finally:
        await engine.dispose()


async def _deliver(
    engine: AsyncEngine, settings: Settings, endpoints: list[Any], marked: int
) -> dict[str, int]:
    from cm_fhir.sync.runner import SyncWorker

    async with SyncWorker(engine, endpoints, settings.ehr) as sync:
        with typer.progressbar(length=marked, label="resending", file=None) as bar:
            done = 0
            while True:
                settled = sum(await asyncio.gather(*(d.run_once() for d in sync.deliveries)))
                if not settled:
                    break
                step = min(settled, marked - done)
                bar.update(step)
                done += step
        totals = {"sent": 0, "failed": 0, "retried": 0}
        for status in sync.status():
            totals["sent"] += status.stats.sent
            totals["failed"] += status.stats.failed
            totals["retried"] += status.stats.retried
        return totals


@outbox_app.command("resend")
@store_options
def resend(
    every: Annotated[
        bool, typer.Option("--all", help="Every case, not only those whose write failed.")
    ] = False,
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint.")] = None,
    case: Annotated[str | None, typer.Option("--case", help="Only this case id.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only Bundles enqueued since (ISO date or time).")
    ] = None,
    send: Annotated[
        bool, typer.Option("--send/--no-send", help="Deliver here, or only mark them.")
    ] = True,
    store: StoreOptions = StoreOptions(),
    ehr_url: Annotated[str | None, typer.Option(help="FHIR base URL of the EHR.")] = None,
) -> None:
    """Send outbox Bundles again (failed ones; every case with --all)."""
    try:
        settings = store.settings(ehr_url=ehr_url)
        if endpoint is not None and endpoint not in {e.name for e in settings.endpoints}:
            fail(f"--endpoint: no endpoint named {endpoint[:64]!r} in the settings")
        marked, totals = asyncio.run(
            _resend(
                settings,
                every_state=every,
                endpoint=endpoint,
                case_id=case,
                since=_since(since),
                send=send,
            )
        )
    except (CmFhirError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"marked {marked} outbox row(s) for resending")
    if totals:
        typer.echo(
            f"sent {totals['sent']}, failed {totals['failed']}, "
            f"waiting to retry {totals['retried']}"
        )
    elif marked and send:
        typer.echo(
            "no EHR endpoint configured here: a `cm-fhir serve` with the sync role sends them"
        )
