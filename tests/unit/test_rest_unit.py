"""App.rest's pure parts: every error code has an HTTP status; command schemas are made
self-contained for the OpenAPI page."""

from __future__ import annotations

import enum

import pydantic

from libs.bridge.protocol import CONDITIONS
from libs.bridge.rest import HTTP_STATUS, _inline_refs


def test_every_error_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(CONDITIONS)
    assert all(400 <= status < 600 for status in HTTP_STATUS.values())


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_schema_references_are_inlined() -> None:
    model = pydantic.create_model("Body", colour=(Colour, Colour.RED), shades=(list[Colour], []))
    schema = model.model_json_schema()
    assert "$defs" in schema  # what pydantic makes: references an OpenAPI page would resolve wrongly
    inlined = _inline_refs(schema)
    assert "$defs" not in inlined and "$ref" not in str(inlined)
    assert inlined["properties"]["colour"]["enum"] == ["red", "blue"]
    assert inlined["properties"]["colour"]["default"] == "red"  # what stood beside the reference stays
    assert inlined["properties"]["shades"]["items"]["enum"] == ["red", "blue"]
