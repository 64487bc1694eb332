"""The console: server-rendered pages for integration engineers and case managers. I/O.

Served by the service's own app under ``/console`` (:class:`~cm_fhir.console.app.ConsoleGate`),
over the same API, keys, tokens, scopes and audit trail; the pages hold no data rules of their
own. Every asset (templates, CSS, JavaScript) ships in this package; the pages load nothing
from another origin.
"""

from cm_fhir.console.app import ConsoleGate

__all__ = ["ConsoleGate"]
