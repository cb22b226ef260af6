"""The OpenAPI 3.1 document of the callback endpoint (pure: bounds in, document out).

``GET /openapi.json`` on the ingress port serves it for the running settings (the
text bounds and the number of parts are settings); ``docs/callbacks-openapi.json``
is the rendering with the default settings (tests/unit/test_callbacks_openapi.py
keeps it current). The production proxy forwards only ``/callbacks/*``, so the
document stays on the private side like ``/metrics``.

Both shapes of the provider's documentation (docs/callbacks.md), each as a GET
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
from sms_replies.ingest.parsing import ATTRIBUTION_PARAMS

CALLBACK_PATH: Final = "/callbacks/smspartner"
DOCUMENT_PATH: Final = "/openapi.json"

# As sent by the provider: international digits (Vonage: no '+'), E.164, or national.
_NUMBER_HELP: Final = (
    "A phone number: international digits (33612345678), E.164 (+33612345678) or "
    "French national (0612345678); it must be a possible number."
)
_NUMBER: Final[dict[str, Any]] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_PHONE,
    "description": _NUMBER_HELP,
}
_ID: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID,
    "pattern": "^[^\\x00-\\x1f\\x7f]*$",
    "description": "The provider's message id, printable characters.",
}
_TIMESTAMP: Final = {
    "type": "string",
    "maxLength": MAX_TIMESTAMP,
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$",
    "description": "The provider's time of the message, YYYY-MM-DD HH:MM:SS.",
}


def _text(limit: int, what: str) -> dict[str, Any]:
    return {
        "type": "string",
        "maxLength": limit,
        "description": f"The text, at most {limit} characters ({what}). A NUL (GSM '@' "
        "passed through by a gateway) is stored as '@'.",
    }


def _integer_text(minimum: int, maximum: int, description: str) -> dict[str, Any]:
    # Query and form values are text; JSON may carry the number itself.
    return {
        "oneOf": [
            {"type": "string", "pattern": "^[0-9]{1,5}$"},
            {"type": "integer", "minimum": minimum, "maximum": maximum},
        ],
        "description": f"{description}: {minimum} to {maximum}.",
    }


def shapes(bounds: Bounds) -> dict[str, dict[str, Any]]:
    """The three callback objects: single long-number message, part of a long SMS, short."""
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
            "together and concat-part is at most concat-total.",
            "required": ["msisdn", "to", "messageId", "concat-ref", "concat-total", "concat-part"],
            "properties": {
                **long_number,
                "text": _text(bounds.max_part_text, "a part of a long SMS"),
                "concat": {"type": "string", "maxLength": 8, "description": "`true`."},
                "concat-ref": _integer_text(0, 65535, "Reference shared by the parts"),
                "concat-total": _integer_text(1, bounds.max_parts, "Number of parts"),
                "concat-part": _integer_text(1, 255, "This part's number"),
            },
        },
        "ShortNumberReply": {
            "type": "object",
            "description": "A reply to the short number (SMS Premium).",
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
        "400": _error(
            "Invalid callback: fields, shape, encoding, a key given twice, too many "
            "parameters. Not retried; kept for audit.",
            problems=True,
        ),
        "401": _error("Token or signature missing or wrong, or a stale signed timestamp."),
        "408": _error("Body not received in time."),
        "413": _error("Body too large."),
        "414": _error("Query string too long."),
        "415": _error("Body of another content type."),
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


def callbacks_openapi(bounds: Bounds | None = None) -> dict[str, Any]:
    """The document for ``bounds`` (default: the default settings)."""
    bounds = bounds or Bounds()
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in shapes(bounds)]
    callback = {"oneOf": refs}
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
                "schema": callback,
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
                "multipart/form-data": {"schema": callback},
                "application/json": {"schema": callback},
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
            "(docs/callbacks.md, docs/security.md). 200 only once the broker holds the "
            "part; 503 + Retry-After when it does not, so that the provider retries.",
        },
        "paths": {CALLBACK_PATH: {"get": get, "post": post}},
        "components": {
            "schemas": shapes(bounds),
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
