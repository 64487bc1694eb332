"""``cm-fhir demo``: the whole service on embedded defaults, in under a minute. I/O edge.

1. The mapping library: every bundled example case mapped to a validated FHIR R4 transaction
   Bundle and read back (one line each).
2. The service: ``serve`` with all roles on a temporary SQLite database and free ports; a
   synthetic ADT feed (:mod:`cm_fhir.demo_feed`) sent over MLLP with the real client, each ACK
   printed; then, once the workers have settled the inbox, the cases opened and the tasks created
   with their due dates; then where to look (API URL, the run's key, curl commands).
3. Keep serving until Ctrl-C, or stop at once with ``--once``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cm_fhir.bundled import bundled_dir
from cm_fhir.cli._app import app
from cm_fhir.cli.errors import EXIT_PROBLEMS, fail
from cm_fhir.errors import CmFhirError
from cm_fhir.settings import load_settings

if TYPE_CHECKING:
    import httpx

    from cm_fhir.service import ServiceInfo


__all__ = ["demo_command"]

_SETTLE_TIMEOUT = 30.0


def _mapping_section(folder: Path, out_dir: Path | None) -> int:
    from cm_fhir.cli.cases import load_case
    from cm_fhir.fhir import case_from_bundle, dumps, map_case
    from cm_fhir.mapping.registry import default_registry

    files = sorted(folder.glob("*.json"))
    if not files:
        fail(f"{folder}: no case documents (*.json)")
    registry = default_registry()
    typer.echo(f"1. Mapping library: {len(files)} example cases -> FHIR R4 transaction Bundles")
    failures = 0
    for path in files:
        case = load_case(path)
        try:
            bundle = map_case(case, registry)
            same = case_from_bundle(bundle, registry) == case
        except CmFhirError as exc:
            failures += 1
            typer.echo(f"   FAILED {path.name}: {exc}")
            continue
        failures += 0 if same else 1
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{case.id}.bundle.json").write_bytes(dumps(bundle))
        typer.echo(
            f"   {case.id:<18} {case.programme:<28} {len(bundle['entry']):>3} resources, "
            f"round trip {'ok' if same else 'DIFFERS'}"
        )
    return failures


async def _play(info: ServiceInfo) -> int:
    from cm_fhir.demo_feed import demo_feed
    from cm_fhir.mllp_client import MllpClient, read_ack

    assert info.mllp_address is not None
    host, port = info.mllp_address
    feed = demo_feed()
    typer.echo(f"\n3. ADT feed over MLLP to {host}:{port} ({len(feed)} messages)")
    not_ok = 0
    seen: set[str] = set()
    async with await MllpClient.connect(host, port) as client:
        for message in feed:
            reply = await client.send(message.text, timeout=10)
            summary = read_ack(reply)
            code = summary[0].code if summary else "??"
            note = (
                "  (same control id and content: answered from the inbox)"
                if (message.control_id in seen)
                else ""
            )
            seen.add(message.control_id)
            typer.echo(f"   {message.control_id}  {code}  {message.label}{note}")
            not_ok += code not in ("AA", "CA")
    return not_ok


async def _wait_settled(client: httpx.AsyncClient) -> bool:
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        response = await client.get("/api/messages", params={"state": "received", "limit": 1})
        response.raise_for_status()
        if not response.json()["items"]:
            return True
        await asyncio.sleep(0.2)
    return False


async def _show_cases(database_url: str) -> int:
    from sqlalchemy import select

    from cm_fhir.domain import Case
    from cm_fhir.store.case_tables import cases as cases_table
    from cm_fhir.store.engine import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(cases_table.c.case_json, cases_table.c.team).order_by(
                        cases_table.c.case_id
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    found = [(Case.model_validate_json(row.case_json), row.team) for row in rows]
    typer.echo(f"\n4. Cases opened by the discharge-planning rules: {len(found)}")
    for case, team in found:
        typer.echo(f"   {case.id:<14} {case.status.value:<10} team: {team or '-'}")
        for task in case.tasks:
            due = task.due.strftime("%Y-%m-%d %H:%M UTC")
            typer.echo(f"      task {task.status.value:<10} due {due}  {task.description}")
        for referral in case.referrals:
            due = referral.due.strftime("%Y-%m-%d %H:%M UTC")
            to = referral.performer.display or "-"
            typer.echo(
                f"      referral {referral.type} ({referral.fulfilment_status.value}) "
                f"due {due}  to {to}"
            )
    return len(found)


def _where_to_look(info: ServiceInfo, key: str) -> None:
    url = info.http_url
    auth = f'-H "Authorization: Bearer {key}"'
    typer.echo("\n5. Where to look")
    typer.echo(f"   API and OpenAPI docs: {url}/docs    key for this run: {key}")
    typer.echo(f"   curl {auth} {url}/fhir/Task?status=requested")
    typer.echo(f"   curl {auth} {url}/fhir/EpisodeOfCare")
    typer.echo(f"   curl {auth} '{url}/api/messages?event=A03'")
    typer.echo(f"   curl {auth} {url}/api/outbox")
    typer.echo(f"   curl {auth} {url}/metrics")


async def _service_section(once: bool, data_dir: Path) -> int:
    import httpx

    from cm_fhir.service import Service
    from cm_fhir.service_roles import worker_available

    key = secrets.token_urlsafe(24)
    settings = load_settings(
        overrides={
            "data_dir": data_dir,
            "database_url": None,
            "database_schema": None,
            "api_keys": key,
            "http": {"host": "127.0.0.1", "port": 0},
            "mllp": {"host": "127.0.0.1", "port": 0},
            "log": {"level": "WARNING"},
        }
    )
    service = Service(settings)
    stop = asyncio.Event()
    ready: asyncio.Future[ServiceInfo] = asyncio.get_running_loop().create_future()
    typer.echo("\n2. Starting the service (API, MLLP listener, worker) on a temporary database")
    task = asyncio.create_task(service.run(stop, ready.set_result))
    waitables: list[asyncio.Future[Any]] = [task, ready]
    done, _ = await asyncio.wait(waitables, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
        return 1
    info = ready.result()
    mllp = f"{info.mllp_address[0]}:{info.mllp_address[1]}" if info.mllp_address else "-"
    typer.echo(f"   API {info.http_url}   MLLP {mllp}   data {data_dir}")
    problems = 0
    try:
        problems += await _play(info)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=info.http_url or "", headers=headers) as client:
            if not worker_available():
                typer.echo("\n4. No worker in this build: the messages stay queued; no cases yet")
            elif await _wait_settled(client):
                await _show_cases(settings.effective_database_url)
            else:
                typer.echo(f"\n4. The worker did not settle the inbox in {_SETTLE_TIMEOUT:g}s")
                problems += 1
        _where_to_look(info, key)
        if not once:
            typer.echo("\nServing until Ctrl-C.")
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
    finally:
        stop.set()
        await task
    return problems


@app.command("demo")
def demo_command(
    once: Annotated[bool, typer.Option("--once", help="Run the demo and exit.")] = False,
    examples: Annotated[
        Path | None, typer.Option(help="A folder of case documents (default: the bundled ones).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Also write each example Bundle here as JSON.")
    ] = None,
    keep: Annotated[
        bool, typer.Option(help="Keep the temporary database folder afterwards.")
    ] = False,
) -> None:
    """Map the example cases, then run the service and play an ADT feed through it."""
    started = time.monotonic()
    failures = _mapping_section(examples or bundled_dir("examples"), out_dir)
    data_dir = Path(tempfile.mkdtemp(prefix="cm-fhir-demo-"))
    try:
        failures += asyncio.run(_service_section(once, data_dir))
    except CmFhirError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        if keep:
            typer.echo(f"\nThe demo database stays in {data_dir}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(data_dir)
    typer.echo(f"\nDemo finished in {time.monotonic() - started:.1f}s.")
    if failures:
        typer.echo(f"{failures} problem(s), see above")
        raise typer.Exit(EXIT_PROBLEMS)
