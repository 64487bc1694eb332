"""Optional: every file of the public HL7v2 corpus gets a proper ACK over one connection.

The corpus lives outside the repository (``../shared/corpus/hl7v2/`` from the repository root)
and is never copied into it; the test is skipped when the folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cm_fhir.errors import Hl7ParseError
from cm_fhir.hl7v2.header import read_header
from cm_fhir.hl7v2.normalise import split_batch
from cm_fhir.listener import MllpListener
from cm_fhir.mllp_client import MllpClient, read_ack

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "hl7v2"
ACK_CODES = {"AA", "AE", "AR", "CA", "CE", "CR"}


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.hl7")) if CORPUS.is_dir() else []


def control_ids(data: bytes) -> tuple[set[str], bool]:
    """MSH-10 of the file's messages, and whether every message is in original ACK mode."""
    try:
        headers = [read_header(m) for m in split_batch(data)]
    except Hl7ParseError:
        return {""}, True
    return {h.control_id for h in headers}, not any(h.enhanced_mode for h in headers)


PROBE = "MSH|^~\\&|PROBE|T|CM|T|20240101||ADT^A08^ADT_A01|PROBE-{n}|P|2.5.1\rPID|1||X^^^T"


@pytest.mark.corpus
@pytest.mark.skipif(not corpus_files(), reason="public HL7v2 corpus folder is absent")
async def test_every_corpus_file_gets_a_proper_ack(running_listener: MllpListener) -> None:
    # After each file a probe message follows on the same connection: every frame before the
    # probe's ACK answers the file (senders may ask for no ACK with MSH-15 NE or ER).
    async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
        for n, path in enumerate(corpus_files()):
            data = path.read_bytes()
            ids, original_mode = control_ids(data)
            await client.send_only(data)
            await client.send_only(PROBE.format(n=n))
            summaries = []
            while True:
                reply = await client.receive(timeout=10)  # raises if the connection dropped
                assert reply.startswith((b"MSH", b"FHS", b"BHS")), path.name
                answers = read_ack(reply)
                if answers and answers[-1].control_id == f"PROBE-{n}":
                    assert answers[-1].code == "AA"
                    break
                summaries += answers
            assert all(s.code in ACK_CODES for s in summaries), path.name
            assert {s.control_id for s in summaries} <= ids, path.name
            if original_mode:
                assert {s.control_id for s in summaries} == ids, path.name
            for summary in summaries:
                if summary.code not in ("AA", "CA"):
                    assert summary.error_code is not None, path.name
