"""The callback endpoint's OpenAPI document: shipped in docs/, served by the ingress for
its own settings, and describing what the examples of the provider's documentation are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.unit.test_ingress_security import MemoryPublisher, make_settings

from sms_replies.bounds import Bounds
from sms_replies.ingest.app import create_app
from sms_replies.ingest.openapi import CALLBACK_PATH, DOCUMENT_PATH, callbacks_openapi
from sms_replies.ingest.parsing import parse_callback

DOCS_COPY = Path(__file__).resolve().parents[2] / "docs" / "callbacks-openapi.json"

# The examples of the provider's documentation (gestion-des-reponses), digits for x.
SINGLE = {
    "msisdn": "33612345678",
    "to": "33756781234",
    "messageId": "02000000ABCDEF01",
    "text": "Test",
    "type": "text",
    "keyword": "Test",
    "message-timestamp": "2016-03-10 09:51:46",
}
PART = {
    **SINGLE,
    "concat": "true",
    "concat-ref": "171",
    "concat-total": "2",
    "concat-part": "1",
    "text": "   Message long....",
}
SHORT = {
    "type": "response",
    "phone_number": "+33612345671",
    "text": "Ma réponse",
    "message_id": "123",
}


def test_docs_copy_is_the_default_rendering() -> None:
    assert json.loads(DOCS_COPY.read_text()) == callbacks_openapi(), (
        "regenerate docs/callbacks-openapi.json: python -m sms_replies.ingest.openapi"
    )


def _validator(document: dict[str, Any]) -> jsonschema.Draft202012Validator:
    schema = document["paths"][CALLBACK_PATH]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    return jsonschema.Draft202012Validator(
        {**schema, "components": document["components"]},
    )


@pytest.mark.parametrize(("fields", "shape"), [(SINGLE, 0), (PART, 1), (SHORT, 2)])
def test_the_provider_examples_fit_exactly_one_shape(fields: dict[str, str], shape: int) -> None:
    document = callbacks_openapi()
    schema = document["paths"][CALLBACK_PATH]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    matching = [
        i
        for i, ref in enumerate(schema["oneOf"])
        if jsonschema.Draft202012Validator({**ref, "components": document["components"]}).is_valid(
            fields
        )
    ]
    assert matching == [shape]
    parse_callback(fields, 0)  # and the ingress takes it


def test_a_part_is_not_a_single_message() -> None:
    assert not _validator(callbacks_openapi()).is_valid({**SINGLE, "concat-ref": "1"})


async def test_ingress_serves_the_document_of_its_settings() -> None:
    settings = make_settings(max_single_text=500, max_parts=10)
    async with TestClient(TestServer(create_app(settings, MemoryPublisher()))) as client:
        response = await client.get(DOCUMENT_PATH)
        assert response.status == 200
        served = await response.json()
    assert served == json.loads(json.dumps(callbacks_openapi(Bounds.of(settings))))
    message = served["components"]["schemas"]["LongNumberMessageFields"]
    assert message["properties"]["text"]["maxLength"] == 500
