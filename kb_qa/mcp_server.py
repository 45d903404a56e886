"""kb-qa as a Model Context Protocol server: knowledge bases as tools for agents and editors.

Built on the official SDK (``mcp`` 2.x, :class:`~mcp.server.mcpserver.MCPServer`) over the same
:class:`~kb_qa.services.Services` the HTTP API uses, in two transports:

- **stdio**: ``kb-qa mcp``, for desktop assistants and IDEs that start the server themselves. The
  local user is trusted, as with the CLI.
- **streamable HTTP** at ``/mcp`` inside ``kb-qa serve`` (:class:`McpEndpoint`): same process, same
  loaded models. With API keys set it takes the API's ``Authorization: Bearer`` keys; every tool
  only reads, so any key may use it (an API key or an admin key).

Tools (typed inputs and outputs, described in their schemas): ``list_knowledge_bases``,
``list_documents``, ``search`` (passages, no model) and ``ask`` (the grounded answer with numbered
sources; ``mode: search`` skips the model). A long ``ask`` reports progress (passages found, then
tokens written) and stops generating within a token when the client cancels. Each document's
indexed text is a resource, ``kbqa://{knowledge_base}/{document}``; every passage and document
carries its ``uri`` so a client can open what an answer cites.

Errors come back as MCP tool errors carrying the API's messages (an unknown knowledge base, a bad
argument, a busy model). Over HTTP every tool and resource acts as the caller's key: its scope limits
what is listed, searched and read, exactly as on the API's routes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.uri_template import UriTemplate
from mcp.types import ListResourcesResult, Resource, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from kb_qa.api.deps import require
from kb_qa.api.errors import ApiError, describe_problems, error_response
from kb_qa.api.schemas import (
    ChatOut,
    DocumentOut,
    ExpandInt,
    KnowledgeBaseOut,
    Message,
    Passage,
    Source,
    TokensInt,
    TopKInt,
)
from kb_qa.domain import MAX_HISTORY_MESSAGES, MAX_QUESTION_CHARS, SCORE
from kb_qa.errors import DocumentNotFound, KbQaError
from kb_qa.events import ChainEvent, Delta, Final, Sources
from kb_qa.keys import Principal, acting_as
from kb_qa.retrieval import document_pieces
from kb_qa.services import Services

log = logging.getLogger(__name__)

DOCUMENT_URI = "kbqa://{knowledge_base}/{+document}"
_DOCUMENT_TEMPLATE = UriTemplate.parse(DOCUMENT_URI)
MODES = ("kb: answer from the passages (default with knowledge bases); search: the passages only, without "
         "the model; chat: the model alone (default without knowledge bases).")  # fmt: skip
LISTED_DOCUMENTS = 1000  # resources/list names at most this many documents
PROGRESS_EVERY_S = 0.5  # at most two progress notifications a second while the model writes

INSTRUCTIONS = """\
kb-qa answers questions from a company's own documents (Chinese and English) with numbered sources.
Call list_knowledge_bases first. Use search for passages (fast, no model) and ask for an answer
written by the local model from the passages; cite sources by their [n]. Open a source's uri as a
resource to read its document's whole indexed text."""


def document_uri(kb: str, document: str) -> str:
    return _DOCUMENT_TEMPLATE.expand({"knowledge_base": kb, "document": document})


# ------------------------------------------------------------------------- outputs
class McpPassage(Passage):
    uri: str = Field(description="The document as an MCP resource (its indexed text).")


class SearchResult(BaseModel):
    query: str = Field(description="The query as searched.")
    passages: list[McpPassage] = Field(description="Best first; neighbouring chunks merged, duplicates dropped.")


class McpSource(Source):
    uri: str = Field(description="The document as an MCP resource (its indexed text).")


class AskResult(ChatOut):
    sources: list[McpSource] = Field(description="The passages the model was given, numbered [n] as in the answer.")  # type: ignore[assignment]  # narrower, as pydantic allows


class McpDocument(DocumentOut):
    uri: str = Field(description="The document as an MCP resource (its indexed text).")


class KnowledgeBases(BaseModel):
    knowledge_bases: list[KnowledgeBaseOut]


class Documents(BaseModel):
    knowledge_base: str
    documents: list[McpDocument]


# ------------------------------------------------------------------------- inputs
Question = Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="The question.")]
KbList = Annotated[
    list[str], Field(max_length=32, description="Knowledge bases to answer from (names from list_knowledge_bases).")
]
TopK = Annotated[TopKInt | None, Field(description="Passages to use (default: the server's retrieval.top_k).")]
Threshold = Annotated[
    float | None,
    Field(**SCORE.bounds, description="Minimum cosine similarity of question and passage (default from settings)."),
]
DocFilter = Annotated[list[str] | None, Field(description="Only these documents (names as listed).")]


PRINCIPAL = "kbqa.principal"  # where McpEndpoint leaves the caller's key in the ASGI scope


def principal_of(request: Any) -> Principal | None:
    """The key an HTTP request came with (see :class:`McpEndpoint`); None over stdio (trusted)."""
    scope = getattr(request, "scope", None)
    return scope.get(PRINCIPAL) if isinstance(scope, dict) else None


@contextmanager
def acting(principal: Principal | None) -> Iterator[None]:
    """Act as ``principal`` (the knowledge-base service checks its scope and role; the audit names it)."""
    if principal is None:
        yield
        return
    with acting_as(principal):
        yield


@contextmanager
def _tool(ctx: Context) -> Iterator[None]:
    """Run a tool's body as its caller, with kb-qa's errors as MCP tool errors carrying the API's
    messages (what went wrong and what to do)."""
    try:
        with acting(principal_of(ctx.request_context.request)):
            yield
    except KbQaError as exc:
        raise ToolError(str(exc)) from exc


@contextmanager
def _logging_left_alone() -> Iterator[None]:
    """The SDK configures the root logger (a Rich handler at INFO) when nothing has yet; the
    application owns logging, so a placeholder handler makes that call a no-op."""
    root, placeholder = logging.getLogger(), logging.NullHandler()
    root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeHandler(placeholder)


class _Server(MCPServer):
    def __init__(self, services: Callable[[], Services], name: str) -> None:
        super().__init__(name, instructions=INSTRUCTIONS, version="0.4")
        self.services = services

    async def _handle_list_resources(self, ctx: Any, params: Any) -> ListResourcesResult:
        """Every indexed document of every knowledge base the caller may see (up to
        :data:`LISTED_DOCUMENTS`), so that a client can offer them in its picker; any other document is
        still readable by its uri."""
        principal = principal_of(getattr(ctx, "request", None))
        documents = await anyio.to_thread.run_sync(self._document_resources, principal)
        return ListResourcesResult(resources=[*await self.list_resources(), *documents])

    def _document_resources(self, principal: Principal | None) -> list[Resource]:
        found: list[Resource] = []
        service = self.services().knowledge_bases
        with acting(principal):
            infos = service.list_all()
        for info in infos:
            try:
                records = service.files(info.name)
            except KbQaError:  # deleted since it was listed
                continue
            for record in records:
                if record.status != "indexed":
                    continue
                if len(found) == LISTED_DOCUMENTS:
                    return found
                found.append(
                    Resource(
                        uri=document_uri(info.name, record.path),
                        name=f"{info.name}/{record.path}",
                        title=record.path,
                        mime_type="text/markdown",
                        description=f"{record.path} in knowledge base {info.name}: its indexed text",
                    )
                )
        return found

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """Arguments that break a tool's schema are told as the API tells them (``top_k: Input should
        be greater than or equal to 1``), not as pydantic's multi-line report with links."""
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError) and not isinstance(exc, UnexpectedToolError):
                problems = describe_problems(exc.__cause__.errors())
                raise ToolError(f"Error executing tool {name}: {problems}") from exc.__cause__
            raise


def build_mcp(services: Callable[[], Services], *, name: str = "kb-qa") -> MCPServer:
    """The MCP server over ``services()`` (a callable: over HTTP the app builds them at start-up)."""
    with _logging_left_alone():
        server: MCPServer = _Server(services, name)
    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    @server.tool(annotations=read_only)
    def list_knowledge_bases(ctx: Context) -> KnowledgeBases:
        """The knowledge bases on this server (that your key may see), with document and chunk counts."""
        from kb_qa.api.routes.knowledge_bases import kb_out

        with _tool(ctx):
            return KnowledgeBases(knowledge_bases=[kb_out(i) for i in services().knowledge_bases.list_all()])

    @server.tool(annotations=read_only)
    def list_documents(
        knowledge_base: Annotated[str, Field(description="The knowledge base's name.")],
        ctx: Context,
    ) -> Documents:
        """The documents of one knowledge base: status (indexed or failed, with the reason), chunks, and the
        resource uri of each document's text."""
        with _tool(ctx):
            records = services().knowledge_bases.files(knowledge_base)
        documents = [
            McpDocument(
                **{k: v for k, v in r.to_dict().items() if k in DocumentOut.model_fields},
                uri=document_uri(knowledge_base, r.path),
            )
            for r in records
        ]
        return Documents(knowledge_base=knowledge_base, documents=documents)

    @server.tool(annotations=read_only)
    def search(
        query: Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="Question or keywords.")],
        knowledge_bases: Annotated[KbList, Field(min_length=1)],
        ctx: Context,
        top_k: TopK = None,
        score_threshold: Threshold = None,
        documents: DocFilter = None,
        expand_chars: Annotated[
            ExpandInt | None, Field(description="Grow passages with neighbouring text up to this size.")
        ] = None,
    ) -> SearchResult:
        """Ranked passages for a query (hybrid dense + keyword retrieval, no language model): each with its
        document, page, heading, cosine score (higher is closer) and text."""
        options = {"top_k": top_k, "score_threshold": score_threshold, "documents": documents,
                   "expand_chars": expand_chars}  # fmt: skip
        with _tool(ctx):
            hits = services().retriever.retrieve(
                query, knowledge_bases, **{k: v for k, v in options.items() if v is not None}
            )
        passages = [McpPassage(**h.to_dict(), uri=document_uri(h.kb, h.document)) for h in hits]
        return SearchResult(query=query, passages=passages)

    @server.tool(annotations=read_only)
    async def ask(
        question: Question,
        ctx: Context,
        knowledge_bases: KbList = [],  # noqa: B006 - pydantic copies defaults; the schema shows []
        history: Annotated[
            list[Message], Field(max_length=MAX_HISTORY_MESSAGES, description="Earlier turns, oldest first.")
        ] = [],  # noqa: B006
        mode: Annotated[
            Literal["kb", "search", "chat"] | None,
            Field(description=MODES),
        ] = None,
        top_k: TopK = None,
        score_threshold: Threshold = None,
        documents: DocFilter = None,
        max_tokens: Annotated[TokensInt | None, Field(description="Longest answer in tokens.")] = None,
    ) -> AskResult:
        """Answer a question from the knowledge bases with the local model, citing passages as [n]. The
        result holds the answer and its numbered sources (with evidence highlights: the sentences that
        support the answer). Reports progress while the model writes; cancel to stop it."""
        svc = services()
        kbs = list(dict.fromkeys(knowledge_bases))
        chosen = mode or ("kb" if kbs else "chat")
        budget = max_tokens or svc.settings.llm.max_new_tokens
        with _tool(ctx):
            for kb in kbs:  # an unknown knowledge base fails before the model is asked
                await anyio.to_thread.run_sync(svc.knowledge_bases.get, kb)
            events = svc.qa.stream(
                question,
                mode=chosen,
                knowledge_bases=kbs,
                history=[m.model_dump() for m in history],
                retrieval={"top_k": top_k, "score_threshold": score_threshold, "documents": documents},
                generation={"max_new_tokens": max_tokens},
            )
            final = await _run(events, ctx, budget)
        final["sources"] = [{**s, "uri": document_uri(s["kb"], s["document"])} for s in final["sources"]]
        return AskResult.model_validate(final)

    @server.resource(
        DOCUMENT_URI,
        name="document",
        title="A document's indexed text",
        description="The text of one document of a knowledge base as the index holds it, page by page.",
        mime_type="text/markdown",
    )
    def document(knowledge_base: str, document: str, ctx: Context) -> str:
        try:
            svc = services()
            with acting(principal_of(ctx.request_context.request)):
                if not any(r.path == document for r in svc.knowledge_bases.files(knowledge_base)):
                    raise DocumentNotFound(f"knowledge base '{knowledge_base}' has no document '{document}'")
                pieces = document_pieces(svc.knowledge_bases.reader(knowledge_base), document)
        except KbQaError as exc:
            raise ResourceError(str(exc)) from exc
        if not pieces:
            return f"# {document}\n\n(no indexed text: the document failed to index or holds no text)\n"
        parts = [f"# {document}\n"]
        for piece in pieces:
            where = " · ".join(x for x in (f"page {piece.page}" if piece.page is not None else "", piece.heading) if x)
            parts.append(f"\n## {where}\n\n{piece.text}\n" if where else f"\n{piece.text}\n")
        return "".join(parts)

    return server


async def _run(events: Iterator[ChainEvent], ctx: Context, budget: int) -> dict[str, Any]:
    """Drive the chain's events on worker threads, one at a time, reporting progress; the final record.

    A cancelled call waits for the step in progress (one token) and then closes the generator, which
    stops the model (as a client that leaves an SSE stream does)."""
    final: dict[str, Any] = {}
    written, last_report = 0, 0.0
    try:
        while True:
            event = await anyio.to_thread.run_sync(next, events, None)
            if event is None:
                break
            match event:
                case Sources(sources=sources):
                    await ctx.report_progress(0, budget, f"{len(sources)} passages found; writing the answer")
                    last_report = time.monotonic()
                case Delta():
                    written += 1
                    if time.monotonic() - last_report >= PROGRESS_EVERY_S:
                        await ctx.report_progress(min(written, budget), budget, f"{written} tokens written")
                        last_report = time.monotonic()
                case Final(answer=answer):
                    final = answer
    except anyio.get_cancelled_exc_class():
        log.info("ask cancelled by the client after %d tokens; generation stopped", written)
        raise
    finally:
        close = getattr(events, "close", None)
        if close is not None:  # shielded: a cancelled call still stops its generation
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close)
    await ctx.report_progress(budget, budget, "done")
    return final


# ------------------------------------------------------------------------- HTTP
class McpEndpoint:
    """``/mcp`` in the API app: MCP's streamable HTTP transport behind the API's keys.

    The session manager lives for one run of the app (:meth:`running`, entered by the app's lifespan);
    a request outside it answers 503."""

    def __init__(self, server: MCPServer, *, host: str, max_request_bytes: int) -> None:
        self.server = server
        self.host = host
        self.max_request_bytes = max_request_bytes
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # a fresh session manager for each run of the app (one can run only once); on a loopback host
        # the SDK turns on DNS-rebinding protection (a web page cannot reach it through a name that
        # resolves to 127.0.0.1); on other interfaces the API's keys guard it
        self.server.streamable_http_app(host=self.host, max_request_body_size=self.max_request_bytes)
        manager = self.server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            scope[PRINCIPAL] = await require("read")(request)  # the tools act as this key
            if self._manager is None:
                raise ApiError(503, "not_ready", "the MCP endpoint is starting or stopping; try again shortly")
        except KbQaError as exc:
            await error_response(request, exc)(scope, receive, send)
            return
        await self._manager.handle_request(scope, receive, send)


def run_stdio(services: Services) -> None:
    """Serve MCP over stdin/stdout until the client closes them (``kb-qa mcp``)."""
    build_mcp(lambda: services).run("stdio")


__all__ = ["DOCUMENT_URI", "McpEndpoint", "build_mcp", "document_uri", "run_stdio"]
