"""The bodies of the ingestion API beyond the calls themselves: the batch
envelope, and what the API answers."""

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    WithJsonSchema,
)


class BatchIn(BaseModel):
    """Up to SEGMENT_MAX_BATCH_ITEMS calls (identify, track, page, screen,
    group, alias), each with its `type`.

    The document (it validates nothing: the endpoint reads its items one by
    one) lists the items as any value: one that is not a valid call is
    refused alone, in the 200's `errors`, so a schema that refused it would
    say the whole request is refused, which it is not."""

    batch: Annotated[
        list[Any],
        WithJsonSchema(
            {
                "type": "array",
                "items": {
                    "description": "A call with its `type`: identify, track, page, screen, "
                    "group or alias (the IdentifyIn, TrackIn, PageIn, ScreenIn, GroupIn and "
                    "AliasIn schemas). An item that is not one is refused alone: "
                    "listed in the answer's `errors`, the other items stored."
                },
            }
        ),
    ]
    sent_at: Annotated[
        Any,
        WithJsonSchema(
            {
                "description": "When the client sent the batch (ISO-8601): the `sentAt` of "
                "every item without its own, which corrects the client's clock. Checked "
                "with each item: a bad one is that item's error.",
            }
        ),
    ] = Field(default=None, alias="sentAt")
    context: Annotated[
        Any,
        WithJsonSchema(
            {
                "description": "A context object for every item, under each item's own "
                "(the item's keys win). Checked with each item: one that is not an object "
                "is the error of each item without a context of its own.",
            }
        ),
    ] = None
    write_key: Annotated[
        Any,
        WithJsonSchema(
            {
                "description": "The API key, when no Authorization header carries it "
                "(analytics.js sends it here); ignored when one does.",
            }
        ),
    ] = Field(default=None, alias="writeKey")


class BatchError(BaseModel):
    """An item of the batch that was refused, and why."""

    index: int = Field(description="The item's position in `batch`, from 0.")
    error: str = Field(description="Each offending field and what is wrong with it.")


class BatchOut(BaseModel):
    """What a batch stored and what it refused; a refused item never fails the others."""

    accepted: int = Field(description="How many items were valid and stored.")
    errors: list[BatchError] = Field(description="The refused items, by index.")


class Accepted(BaseModel):
    success: bool = True


class ErrorOut(BaseModel):
    """A refusal: what is wrong, naming each offending field."""

    error: str = Field(description="What is wrong, naming each offending field.")
    code: str = Field(
        description="The kind of refusal: invalid_request (400), unauthorized (401), "
        "too_large (413)."
    )
    message: str = Field(description="The same as `error` (what RudderStack's SDKs read).")
