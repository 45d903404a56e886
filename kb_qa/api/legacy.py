"""Drop-in routes for tools written against ChatGLM2-6B's api.py and langchain-ChatGLM's api.py.

Thin adapters over the same services as the rest of the API, with the request and response
shapes of the originals:

- ChatGLM2-6B: ``POST /`` ``{"prompt", "history", "max_length", "top_p", "temperature"}`` →
  ``{"response", "history", "status", "time"}`` (plain chat, no knowledge base).
- langchain-ChatGLM: ``POST /local_doc_qa/local_doc_chat`` ``{"knowledge_base_id", "question",
  "history"}`` → ``{"question", "response", "history", "source_documents"}``;
  ``POST /local_doc_qa/upload_file`` (form: ``file``, ``knowledge_base_id``; the knowledge base is
  created when missing, as the original did) and ``upload_files`` (``files``);
  ``GET /local_doc_qa/list_knowledge_base``; ``GET /local_doc_qa/list_files?knowledge_base_id=``;
  ``DELETE /local_doc_qa/delete_file?knowledge_base_id=&doc_name=``. Successes answer
  ``{"code": 200, "msg": ...}`` as the originals did; failures use real HTTP statuses and the
  API's error body (the originals' "200 with an error code" is exactly what we do not repeat).
"""

from __future__ import annotations

import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, File, Form, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from kb_qa.api.deps import Read, Svc, Write
from kb_qa.api.errors import ApiError
from kb_qa.api.schemas import NAME_RULES, KbNameField, Pair, TokensInt, error_responses
from kb_qa.api.uploads import ingest_uploads
from kb_qa.domain import MAX_HISTORY_MESSAGES, MAX_QUESTION_CHARS
from kb_qa.errors import KnowledgeBaseNotFound
from kb_qa.services import Services


class GlmRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # JSON types as declared
    prompt: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question.")
    history: list[Pair] = Field(
        default_factory=list, max_length=MAX_HISTORY_MESSAGES, description="[[question, answer], ...]"
    )
    max_length: TokensInt | None = Field(None, description="Longest answer in tokens (the original's total length).")
    top_p: float | None = Field(None, gt=0, le=1, description="Accepted for compatibility.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy.")


class LocalDocChat(BaseModel):
    model_config = ConfigDict(strict=True)
    knowledge_base_id: KbNameField
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question.")
    history: list[Pair] = Field(
        default_factory=list, max_length=MAX_HISTORY_MESSAGES, description="[[question, answer], ...]"
    )
    streaming: bool = Field(False, description="Accepted for compatibility; the answer comes whole.")


def _pairs(history: list[list[str]]) -> list[list[str]]:
    for index, pair in enumerate(history):
        if len(pair) != 2:
            raise ApiError(422, "invalid_history", f"history[{index}] must be a [question, answer] pair")
    return history


def register(app: FastAPI) -> None:
    """Add the drop-in routes to ``app``."""

    @app.post(
        "/",
        responses=error_responses(),
        tags=["drop-in: ChatGLM2-6B api.py"],
        dependencies=[Read],
        summary="ChatGLM2-6B's api.py chat",
    )
    def glm_chat(body: GlmRequest, services: Svc) -> dict[str, Any]:
        history = _pairs(body.history)
        generation = {"temperature": body.temperature, "max_new_tokens": body.max_length}
        answer = services.qa.ask(body.prompt, mode="chat", history=history, generation=generation)
        return {
            "response": answer.answer,
            "history": [*history, [body.prompt, answer.answer]],
            "status": 200,
            "time": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        }

    tag: list[str | Enum] = ["drop-in: langchain-ChatGLM api.py"]

    @app.post("/local_doc_qa/local_doc_chat", tags=tag, responses=error_responses(), dependencies=[Read])
    def local_doc_chat(body: LocalDocChat, services: Svc) -> dict[str, Any]:
        history = _pairs(body.history)
        answer = services.qa.ask(body.question, mode="kb", knowledge_bases=[body.knowledge_base_id], history=history)
        sources = [
            f"出处 [{s.number}] {Path(s.document).name}：\n\n{s.text}\n\n相关度：{s.score:.4f}\n\n"
            for s in answer.sources
        ]
        return {
            "question": body.question,
            "response": answer.answer,
            "history": [*history, [body.question, answer.answer]],
            "source_documents": sources,
        }

    def _upload(services: Services, kb: str, files: list[UploadFile]) -> dict[str, Any]:
        try:
            services.knowledge_bases.get(kb)
        except KnowledgeBaseNotFound:
            services.knowledge_bases.create(kb)  # the original created it on first upload
        result = ingest_uploads(services, kb, files)
        done = [r.file for r in result.files if r.action != "failed"]
        return {"code": 200, "msg": f"已上传并加载 / uploaded and indexed: {', '.join(done)}"}

    @app.post("/local_doc_qa/upload_file", tags=tag, responses=error_responses(), dependencies=[Write])
    async def upload_file(
        services: Svc, file: Annotated[UploadFile, File()], knowledge_base_id: Annotated[str, Form(**NAME_RULES)]
    ) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(_upload, services, knowledge_base_id, [file])

    @app.post("/local_doc_qa/upload_files", tags=tag, responses=error_responses(), dependencies=[Write])
    async def upload_files(
        services: Svc, files: Annotated[list[UploadFile], File()], knowledge_base_id: Annotated[str, Form(**NAME_RULES)]
    ) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(_upload, services, knowledge_base_id, files)

    @app.get("/local_doc_qa/list_knowledge_base", tags=tag, responses=error_responses(), dependencies=[Read])
    def list_knowledge_base(services: Svc) -> dict[str, Any]:
        return {"code": 200, "msg": "success", "data": [kb.name for kb in services.knowledge_bases.list_all()]}

    @app.get("/local_doc_qa/list_files", tags=tag, responses=error_responses(), dependencies=[Read])
    def list_files(services: Svc, knowledge_base_id: Annotated[str, Query(**NAME_RULES)]) -> dict[str, Any]:
        return {
            "code": 200,
            "msg": "success",
            "data": [r.path for r in services.knowledge_bases.files(knowledge_base_id)],
        }

    @app.delete("/local_doc_qa/delete_file", tags=tag, responses=error_responses(), dependencies=[Write])
    def delete_file(
        services: Svc, knowledge_base_id: Annotated[str, Query(**NAME_RULES)], doc_name: Annotated[str, Query()]
    ) -> dict[str, Any]:
        services.knowledge_bases.remove_files(knowledge_base_id, [doc_name])
        return {"code": 200, "msg": f"{doc_name} 已删除 / deleted"}
