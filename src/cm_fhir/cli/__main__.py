"""``python -m cm_fhir.cli``: the ``cm-fhir`` command."""

from cm_fhir.cli import main

main()
