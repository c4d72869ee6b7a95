"""OpenAI-compatible embeddings: ``POST /v1/embeddings`` and ``GET /v1/models``.

What LangChain, LlamaIndex, open-webui and the official ``openai`` client call. The server offers two
models: ``<name>-query`` (the index's question encoder, as ``POST /embed`` with ``questions``) and
``<name>-passage`` (the artifact's context encoder, as ``POST /embed`` with ``passages`` of an empty
title), where ``<name>`` is ``--model-name`` (default: the index directory's name). The vectors are
``/embed``'s, bit for bit, as JSON floats or (``encoding_format="base64"``, the ``openai`` client's
default) little-endian float32 bytes in base64. ``usage.prompt_tokens`` counts the tokens the encoder
saw (special tokens included, after truncation to the model's maximum). Errors have OpenAI's shape.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fastdpr.model.spec import Side
from fastdpr.serve.errors import ClientError, check_count, check_text
from fastdpr.serve.state import Embedded, ServerState, State

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])

#: What each model name's suffix embeds with.
MODEL_SUFFIXES: dict[str, Side] = {"query": "question", "passage": "context"}


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request (fields this server does not use, like ``user``, are ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(description="<name>-query (questions) or <name>-passage (passages); see GET /v1/models.")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (token arrays are refused: the server tokenizes).")
    encoding_format: str = Field("float", description="float, or base64 (little-endian float32 bytes).")
    dimensions: int | None = Field(None, description="If given, must be the model's embedding size.")
    user: str | None = None


class EmbeddingOut(BaseModel):
    """One input's embedding."""

    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class UsageOut(BaseModel):
    """Tokens the encoder saw (special tokens included, after truncation)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    """OpenAI's embeddings response."""

    object: Literal["list"]
    data: list[EmbeddingOut]
    model: str
    usage: UsageOut


class OpenAIErrorDetail(BaseModel):
    """OpenAI's error fields."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(BaseModel):
    """Every error under /v1/."""

    error: OpenAIErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenAIErrorOut, "description": "Invalid request (empty input, token arrays, bad field)."},
    401: {"model": OpenAIErrorOut, "description": "No or a wrong API key (servers started with --api-key)."},
    404: {"model": OpenAIErrorOut, "description": "Unknown model (the message names the server's models)."},
    413: {"model": OpenAIErrorOut, "description": "Body larger than the server's limit."},
    503: {"model": OpenAIErrorOut, "description": "Queue full (retry after Retry-After seconds) or shutting down."},
}


def models(state: ServerState) -> dict[str, Side]:
    """The models this server offers, and the side each embeds with (``-passage`` needs the artifact)."""
    name = state.options.model_name
    return {f"{name}-{suffix}": side for suffix, side in MODEL_SUFFIXES.items()
            if side == "question" or state.passage_encoder is not None}


def model_side(state: ServerState, model: str) -> Side:
    """The side ``model`` embeds with; an OpenAI 404 naming the valid models otherwise."""
    offered = models(state)
    if model in offered:
        return offered[model]
    message = f"the model '{model}' does not exist on this server; its models are: {', '.join(offered)}"
    if model == f"{state.options.model_name}-passage":
        message += " (passage embeddings need the artifact the index was built from: start with --artifact)"
    raise ClientError(404, message, param="model", code="model_not_found")


def input_texts(given: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    """The texts of ``input`` (one string or a list of strings; each neither blank nor invalid UTF-8)."""
    texts = [given] if isinstance(given, str) else given
    if not texts:
        raise ClientError(400, "input is an empty list", param="input")
    if not all(isinstance(text, str) for text in texts):
        raise ClientError(400, "input holds token ids: this server tokenizes itself, send text (a string or "
                               "a list of strings)", param="input")
    return [check_text(str(text), "input", param="input") for text in texts]


def encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """One embedding as JSON floats, or base64 of its little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return list(vector.tolist())


@router.post("/embeddings", responses={200: {"model": EmbeddingsResponse}, **ERRORS},
             summary="OpenAI-compatible embeddings of texts (questions or passages)")
async def create_embeddings(body: EmbeddingsRequest, state: State) -> JSONResponse:
    """``client.embeddings.create(model="<name>-query", input=[...])`` of the ``openai`` client."""
    side = model_side(state, body.model)
    if body.encoding_format not in ("float", "base64"):
        raise ClientError(400, f"encoding_format must be float or base64, got {body.encoding_format!r}",
                          param="encoding_format")
    if body.dimensions is not None and body.dimensions != state.retriever.dim:
        raise ClientError(400, f"this model's embeddings have {state.retriever.dim} dimensions, and cannot "
                               f"be shortened to {body.dimensions}", param="dimensions")
    texts = input_texts(body.input)
    embedded: Embedded
    if side == "question":
        check_count(len(texts), state.options.max_queue, "input", param="input")
        embedded = await state.embed_questions(texts)
    else:
        check_count(len(texts), state.options.max_passages, "input", param="input")
        embedded = await state.embed_passages([("", text) for text in texts])
    tokens = sum(embedded.tokens)
    return JSONResponse({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded(vector, body.encoding_format)}
                 for i, vector in enumerate(embedded.vectors)],
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })


@router.get("/models", summary="The models /v1/embeddings offers (OpenAI-compatible)")
async def list_models(state: State) -> dict[str, Any]:
    """``client.models.list()``: ``<name>-query``, and ``<name>-passage`` when the server has the artifact."""
    return {"object": "list",
            "data": [{"id": name, "object": "model", "created": state.started_utc, "owned_by": "fastdpr"}
                     for name in models(state)]}
