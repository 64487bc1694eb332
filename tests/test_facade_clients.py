"""The FHIR facade as real clients use it: fhirpy (async) and fhirclient (SMART on FHIR's Python
client) against the app under uvicorn on a real socket: search, paging by the Bundle's links,
count, read, and parameters the facade does not support (ignored, as FHIR's lenient handling
says)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api_case_helpers import case_app, case_json, client, example
from api_fixtures import API_KEY
from live_api import serving

fhirpy = pytest.importorskip("fhirpy")
fhirclient_client = pytest.importorskip("fhirclient.client")
fhir_task = pytest.importorskip("fhirclient.models.task")

__all__ = ["case_app"]

CASES = ("stroke-inpatient-rehab", "hiv-adherence-payer", "brain-injury-clinical-cm")


async def _load(app: FastAPI) -> dict[str, Any]:
    async with client(app) as http:
        for name in CASES:
            assert (await http.post("/api/cases", json=case_json(example(name)))).status_code == 201
        every = (await http.get("/fhir/Task", params={"_count": 100})).json()
    return every


async def test_fhirpy_searches_pages_counts_and_reads(case_app: FastAPI) -> None:
    every = await _load(case_app)
    ids = sorted(e["resource"]["id"] for e in every["entry"])
    async with serving(case_app) as port:
        fhir = fhirpy.AsyncFHIRClient(
            f"http://127.0.0.1:{port}/fhir", authorization=f"Bearer {API_KEY}"
        )
        tasks = fhir.resources("Task")
        assert await tasks.count() == len(ids)
        assert await tasks.search(status="requested").count() == sum(
            1 for e in every["entry"] if e["resource"]["status"] == "requested"
        )
        walked = await tasks.limit(4).fetch_all()  # follows the next links, 4 at a time
        assert sorted(t["id"] for t in walked) == ids
        first = await tasks.search(status="completed").limit(2).fetch()
        assert len(first) == 2
        assert all(t["status"] == "completed" for t in first)
        read = await fhir.reference("Task", ids[0]).to_resource()
        assert read["id"] == ids[0]
        assert read["resourceType"] == "Task"
        # fhirpy adds parameters of its own (and clients add _sort): ignored, not refused.
        sorted_tasks = await tasks.sort("-_lastUpdated").limit(3).fetch()
        assert len(sorted_tasks) == 3
        subset = await tasks.elements("status").limit(1).fetch()
        assert set(subset[0]) <= {"resourceType", "id", "meta", "status"}


def _fhirclient_run(base: str, task_id: str) -> tuple[int, int, str]:
    smart = fhirclient_client.FHIRClient(settings={"app_id": "cm-fhir-test", "api_base": base})
    smart.server.session.headers["Authorization"] = f"Bearer {API_KEY}"
    search = fhir_task.Task.where(struct={"status": "requested", "_count": "2"})
    bundles = list(search.perform_iter(smart.server))  # follows the next links
    every = list(search.perform_resources_iter(smart.server))
    read = fhir_task.Task.read(task_id, smart.server)
    assert len(bundles) > 1
    return bundles[0].total, len(every), read.id


async def test_fhirclient_searches_pages_and_reads(case_app: FastAPI) -> None:
    every = await _load(case_app)
    requested = [
        e["resource"]["id"] for e in every["entry"] if e["resource"]["status"] == "requested"
    ]
    assert len(requested) > 2  # so the search needs more than one page
    async with serving(case_app) as port:
        base = f"http://127.0.0.1:{port}/fhir/"
        total, walked, read_id = await asyncio.to_thread(_fhirclient_run, base, requested[0])
        async with httpx.AsyncClient() as http:  # the facade's metadata stays open
            assert (await http.get(base + "metadata")).status_code == 200
    assert total == len(requested)
    assert walked == len(requested)
    assert read_id == requested[0]
