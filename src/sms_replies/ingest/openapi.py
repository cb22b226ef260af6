"""The OpenAPI 3.1 document of the callback endpoint (pure: bounds in, document out).

``GET /openapi.json`` on the ingress port serves it for the running settings (the
text bounds and the number of parts are settings); ``docs/callbacks-openapi.json``
is the rendering with the default settings (tests/unit/test_callbacks_openapi.py
keeps it current). The production proxy forwards only ``/callbacks/*``, so the
document stays on the private side like ``/metrics``.

Both shapes of the provider's documentation (gestion-des-reponses), each as a GET
query, a form body (urlencoded or multipart) and a JSON object:

* long number, Vonage-style: ``msisdn``, ``to``, ``messageId`` and, on the part of
  a long SMS, ``concat``, ``concat-ref``, ``concat-total``, ``concat-part``;
* short number: ``type`` (``response`` | ``stop``), ``phone_number``, ``text``,
  ``message_id``.

Unknown fields (``keyword``, the signature's ``sig``, ``timestamp``) are allowed.
"""

from __future__ import annotations

from typing import Any, Final

from sms_replies.bounds import MAX_ATTRIBUTION, MAX_ID, MAX_PHONE, MAX_TIMESTAMP, Bounds
from sms_replies.ingest.parsing import ATTRIBUTION_PARAMS, NUMBER_PATTERN, TIMESTAMP_PATTERN

CALLBACK_PATH: Final = "/callbacks/smspartner"
DOCUMENT_PATH: Final = "/openapi.json"

# As sent by the provider: international digits (Vonage: no '+'), E.164, or national.
_NUMBER_HELP: Final = (
    "A phone number: international digits (33612345678), E.164 (+33612345678) or "
    "French national (0612345678). One that cannot exist (a length its country does "
    "not have) is answered 422."
)
_NUMBER: Final[dict[str, Any]] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_PHONE,
    "pattern": NUMBER_PATTERN,
    "description": _NUMBER_HELP,
}
# A JSON number is taken as its text (ids, texts): the provider may send either.
_ID: Final = {
    "type": ["string", "number"],
    "minLength": 1,
    "maxLength": MAX_ID,
    "pattern": "^[^\\x00-\\x1f\\x7f]*$",
    "description": "The provider's message id, printable characters.",
}
_TIMESTAMP: Final = {
    "type": "string",
    "maxLength": MAX_TIMESTAMP,
    "pattern": TIMESTAMP_PATTERN,
    "description": "The provider's time of the message (UTC), YYYY-MM-DD HH:MM:SS; one "
    "that does not exist or is before 1970 is answered 422.",
}


def _text(limit: int, what: str) -> dict[str, Any]:
    return {
        "type": ["string", "number"],
        "maxLength": limit,
        "description": f"The text, at most {limit} characters ({what}). A NUL (GSM '@' "
        "passed through by a gateway) is stored as '@'.",
    }


def _range(low: int, high: int) -> str:
    """A pattern of the decimal numbers low..high (leading zeros allowed, as int() reads)."""
    if high - low <= 300:
        numbers = "|".join(str(n) for n in range(high, low - 1, -1))
        return f"^0*(?:{numbers})$"
    if (low, high) == (0, 65535):
        return (
            "^0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
            "|6553[0-5])$"
        )
    raise ValueError(f"no pattern for {low}..{high}")


def _integer_text(minimum: int, maximum: int, description: str) -> dict[str, Any]:
    # Query and form values are text; JSON may carry the number itself.
    return {
        "oneOf": [
            {"type": "string", "pattern": _range(minimum, maximum)},
            {"type": "integer", "minimum": minimum, "maximum": maximum},
        ],
        "description": f"{description}: {minimum} to {maximum}.",
    }


def shapes(bounds: Bounds, max_fields: int = 49) -> dict[str, dict[str, Any]]:
    """The three callback objects: single long-number message, part of a long SMS, short.

    ``max_fields``: the parameter limit less the token.
    """
    long_number = {
        "msisdn": {**_NUMBER, "description": "The sender. " + _NUMBER_HELP},
        "to": {**_NUMBER, "description": "Our long number. " + _NUMBER_HELP},
        "messageId": _ID,
        "type": {"type": "string", "enum": ["text", "unicode", "binary"], "default": "text"},
        "message-timestamp": _TIMESTAMP,
        "keyword": {"type": "string", "description": "The provider's first word (ignored)."},
    }
    return {
        "LongNumberMessage": {
            "type": "object",
            "description": "A single SMS to a long number (Vonage-style fields).",
            "maxProperties": max_fields,
            "required": ["msisdn", "to", "messageId"],
            "properties": {
                **long_number,
                "text": _text(bounds.max_single_text, "a single message"),
                # With any of them, the callback is a part (below).
                "concat-ref": False,
                "concat-total": False,
                "concat-part": False,
            },
        },
        "LongNumberPart": {
            "type": "object",
            "description": "One part of a long SMS to a long number: the concat fields go "
            "together; a concat-part beyond concat-total is answered 422.",
            "maxProperties": max_fields,
            "required": ["msisdn", "to", "messageId", "concat-ref", "concat-total", "concat-part"],
            "properties": {
                **long_number,
                "text": _text(bounds.max_part_text, "a part of a long SMS"),
                "concat": {
                    "type": ["string", "boolean"],
                    "maxLength": 8,
                    "description": "`true` (a JSON body may send the boolean).",
                },
                "concat-ref": _integer_text(0, 65535, "Reference shared by the parts"),
                "concat-total": _integer_text(1, bounds.max_parts, "Number of parts"),
                "concat-part": _integer_text(1, 255, "This part's number"),
            },
        },
        "ShortNumberReply": {
            "type": "object",
            "description": "A reply to the short number (SMS Premium).",
            "maxProperties": max_fields,
            "required": ["type", "phone_number"],
            "properties": {
                "msisdn": False,  # with it, the callback is a long-number one
                "type": {"type": "string", "enum": ["response", "stop"]},
                "phone_number": {**_NUMBER, "description": "The sender. " + _NUMBER_HELP},
                "text": _text(bounds.max_single_text, "a single message"),
                "message_id": {**_ID, "minLength": 0, "description": "The campaign message."},
            },
        },
    }


def _error(description: str, *, problems: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"error": {"type": "string"}}
    if problems:
        properties["problems"] = {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Each refused field (or `callback`, `body`) and the rule it broke.",
        }
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["error"], "properties": properties}
            }
        },
    }


def _plain_too(response: dict[str, Any]) -> dict[str, Any]:
    content = {**response["content"], "text/plain": {"schema": {"type": "string"}}}
    return {**response, "content": content}


def _responses() -> dict[str, Any]:
    return {
        "200": {
            "description": "Accepted: the broker acknowledged the part (acks=all).",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"const": "accepted"}},
                    }
                }
            },
        },
        "400": _plain_too(
            _error(
                "Invalid callback: fields, shape, encoding, a key given twice, too many "
                "parameters. Not retried; kept for audit. A request the HTTP parser cannot "
                "read (a request line over SMS_REPLIES_MAX_QUERY_BYTES + 1 KiB, a header "
                "over 8 KiB) is refused by it in plain text, before any handler.",
                problems=True,
            )
        ),
        "401": _error("Token or signature missing or wrong, or a stale signed timestamp."),
        "408": _error("Body not received in time."),
        "413": _error("Body too large."),
        "414": _error("Query string too long."),
        "415": _error("Body of another content type."),
        "422": _error(
            "Well-formed fields that make no callback: a number that cannot exist, concat "
            "fields that disagree (concat-part beyond concat-total, concat true without "
            "them). Not retried; kept for audit.",
            problems=True,
        ),
        "503": {
            **_error("The broker did not acknowledge in time: retry later."),
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
        },
    }


def _attribution_parameters() -> list[dict[str, Any]]:
    """Our URL's own ``campaign`` and ``tag`` (per-campaign reply URLs, docs/analytics.md)."""
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": f"Stored as the reply's `{name}` column; 400 naming it otherwise.",
            "schema": {"type": "string", "maxLength": MAX_ATTRIBUTION, "pattern": "^[ -~]*$"},
        }
        for name in ATTRIBUTION_PARAMS
    ]


def callbacks_openapi(bounds: Bounds | None = None, max_params: int = 50) -> dict[str, Any]:
    """The document for ``bounds`` and ``max_params`` (default: the default settings)."""
    bounds = bounds or Bounds()
    # Besides the fields: the token and our URL's campaign and tag, in the query.
    schemas = shapes(bounds, max_params - 1 - len(ATTRIBUTION_PARAMS))
    # The token comes from the query only: the same key in the fields repeats it.
    schemas = {
        name: {**schema, "properties": {**schema["properties"], "token": False}}
        for name, schema in schemas.items()
    }
    # A query or a form carries text: a field's value is one value (a list would
    # repeat the key, which is refused). A JSON object may carry any other field.
    scalars = {"additionalProperties": {"type": ["string", "number", "boolean"]}}
    own = dict.fromkeys(ATTRIBUTION_PARAMS, False)  # separate query parameters
    query_schemas = {
        f"{name}Query": {**schema, **scalars, "properties": {**schema["properties"], **own}}
        for name, schema in schemas.items()
    }
    text_schemas = {f"{name}Fields": {**schema, **scalars} for name, schema in schemas.items()}
    query = {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in query_schemas]}
    callback = {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in text_schemas]}
    # A multipart field's name travels in a header: no control characters or quotes.
    header_names = {"propertyNames": {"pattern": '^[^\\x00-\\x1f\\x7f"\\\\]+$'}}
    multipart_schemas = {
        f"{name}Multipart": {**schema, **scalars, **header_names}
        for name, schema in schemas.items()
    }
    multipart = {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in multipart_schemas]}
    json_callback = {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in schemas]}
    security: list[dict[str, list[str]]] = [{"callbackToken": []}]
    get = {
        "operationId": "callback_get",
        "summary": "A reply, as query parameters",
        "parameters": [
            {
                "name": "callback",
                "in": "query",
                "required": True,
                "style": "form",
                "explode": True,
                "description": "The callback's fields, each a query parameter.",
                "schema": query,
            },
            *_attribution_parameters(),
        ],
        "security": security,
        "responses": _responses(),
    }
    post = {
        "operationId": "callback_post",
        "summary": "A reply, as a form or JSON body",
        "parameters": _attribution_parameters(),
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": callback},
                "multipart/form-data": {"schema": multipart},
                "application/json": {"schema": json_callback},
            },
        },
        "security": security,
        "responses": _responses(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sms-replies callback endpoint",
            "version": "1",
            "description": "Where SMS Partner posts the replies to a campaign "
            "(docs/security.md). 200 only once the broker holds the "
            "part; 503 + Retry-After when it does not, so that the provider retries.",
        },
        "paths": {CALLBACK_PATH: {"get": get, "post": post}},
        "components": {
            "schemas": {**schemas, **query_schemas, **text_schemas, **multipart_schemas},
            "securitySchemes": {
                "callbackToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "SMS_REPLIES_CALLBACK_TOKEN, in the URL given to the "
                    "provider; checked when the setting is set (401 otherwise).",
                }
            },
        },
    }


if __name__ == "__main__":  # python -m sms_replies.ingest.openapi > docs/callbacks-openapi.json
    import json

    print(json.dumps(callbacks_openapi(), indent=2, ensure_ascii=False))
