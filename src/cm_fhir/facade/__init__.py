"""The read-only FHIR facade's pure parts: search parameters, dates, paging, CapabilityStatement.

Pure: no I/O. The routes in :mod:`cm_fhir.api.routes.fhir` parse a request with
:func:`parse_search`, ask the store for one page and assemble the answer with :func:`searchset`;
``GET /fhir/metadata`` is :func:`capability_statement`.
"""

from cm_fhir.facade.capability import capability_statement, read_scopes
from cm_fhir.facade.dates import DateBound, DatePrefix, parse_date_bound
from cm_fhir.facade.paging import Cursor, Direction, Page, page_links, parse_cursor, searchset
from cm_fhir.facade.parameters import RESOURCE_TYPES, SEARCH_PARAMETERS, Field
from cm_fhir.facade.search import (
    Criterion,
    DateCriterion,
    IdCriterion,
    ReferenceCriterion,
    SearchQuery,
    Token,
    TokenCriterion,
    parse_search,
)

__all__ = [
    "RESOURCE_TYPES",
    "SEARCH_PARAMETERS",
    "Criterion",
    "Cursor",
    "DateBound",
    "DateCriterion",
    "DatePrefix",
    "Direction",
    "Field",
    "IdCriterion",
    "Page",
    "ReferenceCriterion",
    "SearchQuery",
    "Token",
    "TokenCriterion",
    "capability_statement",
    "page_links",
    "parse_cursor",
    "parse_date_bound",
    "parse_search",
    "read_scopes",
    "searchset",
]
