"""What every handler shares: the application's configuration, JSON answers and error
bodies (the errors middleware), parameters validated from a request, and the store
read in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from sms_replies.analytics.api._params import RangeParams
from sms_replies.analytics.campaigns import CampaignExistsError
from sms_replies.analytics.optouts import NoOptOutListError
from sms_replies.analytics.params import (
    Bucket,
    GroupBy,
    InvalidQueryError,
    StatsQuery,
    UnknownCampaignError,
    last_buckets_start,
    parse_zone,
    time_range,
)
from sms_replies.analytics.queries import to_plain
from sms_replies.errors import SmsRepliesError
from sms_replies.schema import TABLE
from sms_replies.stores.errors import StoreBusyError, StoreError
from sms_replies.stores.readers import Reader, open_store
from sms_replies.stores.url import StoreURL

# The API's logger, named as before the module became a package.
log = logging.getLogger(__package__)

T = TypeVar("T")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    store: StoreURL
    default_tz: str
    store_timeout: float
    pseudonymize_key: bytes | None = None  # senders are stored pseudonymised under it


CONFIG: Final = web.AppKey("sms_replies_analytics_config", ApiConfig)


class ApiError(SmsRepliesError):
    """An API request answered with ``status`` and a JSON error body."""

    def __init__(
        self, status: int, error: str, message: str, *, parameter: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.parameter = parameter


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(to_plain(value), status=status, dumps=_dumps)


def _error_body(
    error: str,
    message: str,
    parameter: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "message": message}
    if parameter is not None:
        body["parameter"] = parameter
    if errors:
        body["errors"] = errors
    return body


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        errors = exc.errors if isinstance(exc, _InvalidParametersError) else None
        return _json(_error_body(exc.error, exc.message, exc.parameter, errors), exc.status)
    except InvalidQueryError as exc:
        return _json(_error_body("invalid_parameter", exc.message, exc.param), 400)
    except UnknownCampaignError as exc:
        return _json(_error_body("unknown_campaign", str(exc), "campaign"), 404)
    except CampaignExistsError as exc:
        return _json(_error_body("campaign_exists", str(exc), "name"), 409)
    except NoOptOutListError as exc:  # never an empty list the sender would trust
        error = "optout_list_missing" if exc.reason == "not_kept" else "store_missing"
        return _json(_error_body(error, str(exc)), 503)
    except StoreBusyError:
        response = _json(
            _error_body("store_busy", "the store is busy being written; retry shortly"), 503
        )
        response.headers["Retry-After"] = "1"
        return response
    except StoreError as exc:
        if exc.retriable:  # the server is down or restarting
            log.warning("analytics store unavailable: %s", exc)
            response = _json(
                _error_body("store_unavailable", "the store is unavailable; retry"), 503
            )
            response.headers["Retry-After"] = "5"
            return response
        log.exception("analytics store error")
        return _json(_error_body("store_error", "the store could not be read"), 500)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _json(_error_body(exc.reason.lower().replace(" ", "_"), exc.reason), exc.status)
        if "Allow" in exc.headers:  # 405: the methods the path has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("analytics API failure on %s", request.path)
        return _json(_error_body("internal_error", "internal error"), 500)


def _params(request: web.Request, model: type[M]) -> M:
    raw: dict[str, str] = {}
    for name in request.query:
        values = request.query.getall(name)
        if len(values) > 1:
            raise ApiError(400, "invalid_parameter", "given more than once", parameter=name)
        raw[name] = values[0]
    return _validate(model, raw)


def _validate(model: type[M], raw: Any) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {
                "parameter": ".".join(str(p) for p in err["loc"]) or "body",
                "message": "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
        first = errors[0]
        raise _InvalidParametersError(first["parameter"], first["message"], errors) from None


class _InvalidParametersError(ApiError):
    def __init__(self, parameter: str, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(400, "invalid_parameter", message, parameter=parameter)
        self.errors = errors


async def _read(request: web.Request, query: Callable[[Reader], T], *, replies: bool = False) -> T:
    """``query`` on a reader of the configured store, in a thread.

    ``replies``: the answer is figures or rows of replies, so a store that does not
    exist or holds no replies table is a 503 ``store_missing`` (as the CLI's warning
    and exit 1), never zeros an analyst would trust.
    """
    config = request.app[CONFIG]

    def run() -> T:
        with open_store(config.store, timeout=config.store_timeout) as reader:
            if replies:
                _require_replies(reader)
            return query(reader)

    return await asyncio.to_thread(run)


def _require_replies(reader: Reader) -> None:
    if not reader.exists:
        what = "does not exist"
    elif not reader.columns(TABLE):
        what = "holds no replies table"
    else:
        return
    raise ApiError(
        503,
        "store_missing",
        f"the store {what}: no reply stored there yet, or another store was meant "
        "(SMS_REPLIES_ANALYTICS_STORE, --store)",
    )


def _tz(request: web.Request, tz: str | None) -> str:
    name = tz or request.app[CONFIG].default_tz
    parse_zone(name)
    return name


def _stats_query(
    request: web.Request,
    p: RangeParams,
    *,
    group_by: GroupBy | None = None,
    bucket: Bucket | None = None,
    top: int = 10,
) -> StatsQuery:
    tz = _tz(request, p.tz)
    start, end = time_range(p.since, p.until, tz=tz)
    start = min(start, end)  # since at or after until: an empty range
    if bucket is not None:
        start = last_buckets_start(start, end, bucket)
    return StatsQuery(
        start=start,
        end=end,
        tz=tz,
        group_by=group_by,
        bucket=bucket,
        campaign=p.campaign,
        top=top,
    )
