"""Outbox delivery to FHIR endpoints: the ``sync`` worker role. I/O.

Submodules: :mod:`~cm_fhir.sync.config` (endpoint settings, no I/O), :mod:`~cm_fhir.sync.prepare`
(what to send for one outbox Bundle, no I/O), :mod:`~cm_fhir.sync.patients` (the EHR's Patient
by identifier), :mod:`~cm_fhir.sync.deliver` (one endpoint's delivery) and
:mod:`~cm_fhir.sync.runner` (the role's loop). Nothing is imported here, so the settings can use
the config without loading the HTTP client.
"""
