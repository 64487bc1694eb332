"""cm-fhir: a FHIR R4 integration layer for healthcare case management.

The pure core (``domain``, ``mapping``, ``fhir``, ``profiles``, ``hl7v2``, ``workflow``) does no
I/O; the edges (``store``, ``listener``, ``cli``) do. An import-linter contract keeps it so.
"""

__version__ = "0.1.0"
