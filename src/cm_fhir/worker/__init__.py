"""The inbox worker: HL7v2 rows in, case state, outbox, trace and FHIR resources out. I/O.

::

    worker = Worker(engine, WorkerConfig(batch_size=200, max_attempts=5))
    await worker.run_once()            # or: await worker.run(stop_event), which also closes cases
    await worker.close_due()           # close the cases that are due (cm_fhir.worker.closing)
    await replay(engine)               # every row again: idempotent, nothing is duplicated
    await replay_dead_letter(engine, row_id)   # and release the rows waiting behind it

Rows are taken per patient in arrival order (different patients in parallel, also across
processes on PostgreSQL); each batch commits the patients' state documents, the ``cases`` rows,
the outbox Bundles, the trace and the inbox rows' states in one transaction. See
:mod:`cm_fhir.worker.processor` for one batch, :mod:`cm_fhir.store.queue` for the claim,
:mod:`cm_fhir.worker.policy` for the messages not applied (MSH-11) and those that need attention,
and :mod:`cm_fhir.worker.closing` for the closing scheduler.
"""

from cm_fhir.store.queue import replay, replay_dead_letter
from cm_fhir.worker.batch import BatchResult, describe_error
from cm_fhir.worker.closing import CaseCloser, ClosingResult
from cm_fhir.worker.policy import ATTENTION_FLAGS
from cm_fhir.worker.processor import BatchProcessor
from cm_fhir.worker.runner import Worker, WorkerConfig

__all__ = [
    "ATTENTION_FLAGS",
    "BatchProcessor",
    "BatchResult",
    "CaseCloser",
    "ClosingResult",
    "Worker",
    "WorkerConfig",
    "describe_error",
    "replay",
    "replay_dead_letter",
]
