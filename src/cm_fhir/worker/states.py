"""The patient states of one batch, in memory: lookups through aliases and what to write.

No I/O of its own: :class:`PatientBook` wraps the ``patient_states`` rows a batch has locked. It
decodes the documents, follows alias rows (keys merged into another patient) to the document they
point at, and records which documents and aliases the batch changed. A state is filed under its
first patient key; its other keys, the key it was found under and the keys an A40 retired become
aliases of that key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cm_fhir.store.cases import StateRow
from cm_fhir.workflow import PatientState

__all__ = ["PatientBook"]

_CACHE_LIMIT = 20_000


class PatientBook:
    """The states a batch works on; see the module docstring."""

    def __init__(
        self, rows: dict[str, StateRow], cache: dict[str, tuple[str, PatientState]] | None = None
    ) -> None:
        self._rows = rows
        # Decoded documents of earlier batches, by key: reused when the stored text is the same.
        self._cache = cache if cache is not None else {}
        self._alias = {k: r.alias_of for k, r in rows.items() if r.alias_of}
        self._docs: dict[str, PatientState] = {}
        self._dirty_docs: set[str] = set()
        self._dirty_aliases: set[str] = set()

    def decode_all(self) -> None:
        """Decode every stored document once."""
        for key, row in self._rows.items():
            if row.document is None or row.alias_of is not None:
                continue
            cached = self._cache.get(key)
            if cached is not None and cached[0] == row.document:
                self._docs[key] = cached[1]
            else:
                self._docs[key] = PatientState.model_validate_json(row.document)

    def resolve(self, key: str) -> str:
        """The key the patient's document is filed under."""
        seen = {key}
        while key in self._alias:
            key = self._alias[key]
            if key in seen:  # a cycle cannot be written, but never loop on one
                break
            seen.add(key)
        return key

    def has_document(self, key: str) -> bool:
        """Whether a document is filed under ``key`` itself."""
        return key in self._docs

    def link(self, aliases: Mapping[str, str]) -> None:
        """Make each key of ``aliases`` (holding no document) an alias of its value."""
        for key, primary in aliases.items():
            if key != primary and key not in self._docs:
                self._alias[key] = primary
                self._dirty_aliases.add(key)

    def state(self, key: str) -> PatientState:
        """The patient's current state; ``PatientState()`` for a patient not seen before."""
        return self._docs.get(self.resolve(key)) or PatientState()

    def merged(self, key: str, others: Sequence[str]) -> list[PatientState]:
        """The states of an A40's prior patients that are not already this patient's."""
        seen = {self.resolve(key)}
        out: list[PatientState] = []
        for other in others:
            primary = self.resolve(other)
            if primary in seen:
                continue
            seen.add(primary)
            state = self._docs.get(primary)
            if state is not None:
                out.append(state)
        return out

    def file(self, key: str, state: PatientState, retired: Iterable[str] = ()) -> str:
        """Keep ``state`` as the patient's new state; return the key it is filed under."""
        old = self.resolve(key)
        primary = state.patient_keys[0] if state.patient_keys else old
        self._docs[primary] = state
        self._alias.pop(primary, None)
        self._dirty_docs.add(primary)
        self._dirty_aliases.discard(primary)
        for other in {old, *state.patient_keys[1:], *retired} - {primary}:
            self._alias[other] = primary
            self._docs.pop(other, None)
            self._dirty_docs.discard(other)
            self._dirty_aliases.add(other)
        return primary

    def replace(self, key: str, state: PatientState) -> str:
        """Keep ``state`` under the key it is filed under; no alias changes (closing a case)."""
        primary = self.resolve(key)
        self._docs[primary] = state
        self._dirty_docs.add(primary)
        return primary

    def dirty(self) -> tuple[dict[str, str], dict[str, str]]:
        """Documents (as JSON) and aliases the batch changed."""
        documents = {k: self._docs[k].model_dump_json() for k in sorted(self._dirty_docs)}
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        self._cache.update({k: (d, self._docs[k]) for k, d in documents.items()})
        aliases = {k: self._alias[k] for k in sorted(self._dirty_aliases) if k in self._alias}
        return documents, aliases

    def case_ids(self) -> set[str]:
        """Ids of every case in the loaded documents."""
        return {case.id for state in self._docs.values() for case in state.cases}

    def team_of(self, key: str, case_id: str) -> str | None:
        """The team of the visit the case belongs to, from the workflow's visit memory."""
        state = self._docs.get(self.resolve(key))
        if state is None:
            return None
        return next((v.team for v in state.visits if v.case_id == case_id), None)
