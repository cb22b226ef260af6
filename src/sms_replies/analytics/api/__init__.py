"""Analytics HTTP API and dashboard (aiohttp): ``create_api_app(store)``.

Routes (every one is described by ``GET /api/openapi.json``):

- ``GET /api/summary``, ``/api/timeseries``, ``/api/keywords``: statistics;
- ``GET /api/campaigns`` (with their figures), ``POST /api/campaigns`` (declare);
- ``GET /api/replies``: reply rows, filtered and paged;
- ``GET /api/optouts``: the opt-out list (the object ``sms-replies optouts list
  --format json`` prints);
- ``GET /dashboard/``: the dashboard page, its files under ``/dashboard/static/``.

Query parameters are validated by pydantic models (unknown or repeated ones
are refused); an invalid one gets ``400 {"error": "invalid_parameter",
"parameter": ..., "message": ...}``. Errors never carry stack traces. Each
request reads the store (DuckDB, PostgreSQL or ClickHouse: a
:class:`~sms_replies.stores.url.StoreURL`) in a thread through
:func:`~sms_replies.stores.readers.open_store`, closed right after; for DuckDB,
through the DuckDB sink's loopback endpoint while the sink owns the store
(readers can then never hold its writes back), else the file itself, read-only.

The modules: :mod:`._params` (the parameter and body models), :mod:`._http` (what
every handler shares: configuration, JSON answers and errors, validation, store
reads), :mod:`._handlers` (the handlers), :mod:`._openapi` (``ROUTES`` and the
OpenAPI document), :mod:`._app` (``create_api_app``).
"""

from sms_replies.analytics.api._app import create_api_app
from sms_replies.analytics.api._openapi import ROUTES, openapi_document
from sms_replies.analytics.api._params import CAMPAIGN_NAME_PATTERN, FRENCH_NUMBER_PATTERN

__all__ = [
    "CAMPAIGN_NAME_PATTERN",
    "FRENCH_NUMBER_PATTERN",
    "ROUTES",
    "create_api_app",
    "openapi_document",
]
