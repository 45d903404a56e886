"""Question answering over knowledge bases, as a LangChain (LCEL) chain.

The chain, step by step (:meth:`QAChain.runnable`)::

    prepare ─► rewrite (follow-up → standalone query, only with history) ─► retrieve
            ─► answer: no passage passed the threshold → the configured "no answer" text (no LLM call)
                       otherwise → prompt (numbered passages, question) + history ─► LLM, streamed

Three modes: ``kb`` (grounded on knowledge bases, the default), ``search`` (retrieval only: the
passages, no LLM) and ``chat`` (the LLM with history, no retrieval).

Prompts live in ``configs/prompts/<language>.yaml`` (``system``, ``passage``, ``grounded``,
``rewrite``, ``no_answer``); the language is the question's (Chinese when at least a fifth of its
letters are CJK) unless ``qa.language`` fixes it. The passages are numbered [1]..[n] in the prompt;
the answer's sources keep those numbers and say which ones the answer cites.

The prompt is fitted to the model's context window by :func:`kb_qa.llm.budget.fit_context`:
the oldest history goes first, then the lowest-ranked passages; the sources list only what the
model saw.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.runnables import Runnable, RunnableGenerator, RunnableLambda, RunnablePassthrough

from kb_qa.domain import PASSAGE_ORDERS, SearchHit
from kb_qa.errors import BadRequest, ConfigError
from kb_qa.events import ChainEvent, Delta, Final, Sources
from kb_qa.evidence import CitationChecker, EvidenceFinder
from kb_qa.llm.base import Message, normalize_history
from kb_qa.llm.budget import fit_context
from kb_qa.llm.chat_llm import ChatLLM
from kb_qa.prompts import PromptSet, question_language
from kb_qa.retrieval import Retriever

MODES = ("kb", "search", "chat")
_CITATION = re.compile(r"[\[【](\d{1,3})[\]】]")


@dataclass
class Source:
    """A passage the model was given, numbered as in the prompt."""

    number: int
    kb: str
    document: str
    page: int | None
    heading: str
    chunk_id: int
    chunk_ids: list[int]
    score: float
    relevance: float | None
    text: str
    start: int
    end: int
    cited: bool = False
    # evidence: spans of ``text`` ({start, end, score}, best first) that best support the answer
    # (in the sources event, before there is an answer: the question); see kb_qa/evidence.py
    highlights: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_hit(cls, number: int, hit: SearchHit) -> Source:
        return cls(number, hit.kb, hit.document, hit.page, hit.heading, hit.chunk_id, hit.chunk_ids or [hit.chunk_id],
                   hit.score, hit.relevance, hit.text, hit.start, hit.end)  # fmt: skip


@dataclass
class Answer:
    """The result of one question (see :meth:`QAChain.ask`)."""

    question: str
    answer: str
    mode: str
    sources: list[Source] = field(default_factory=list)
    query: str = ""  # what retrieval searched for (the standalone form of a follow-up)
    declined: bool = False  # True when the "no answer" text was given without asking the model
    language: str = "en"
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds
    models: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cited_numbers(text: str) -> set[int]:
    return {int(n) for n in _CITATION.findall(text)}


def _source_label(hit: SearchHit) -> str:
    return hit.document if hit.page is None else f"{hit.document}, p. {hit.page}"


class QAChain:
    """Retrieval-augmented answers with history, citations and streaming.

    :param retriever: finds passages.
    :param llm: a function that returns the chat model (called on first need, so retrieval-only
        use never loads a model).
    :param prompts_dir: folder with ``en.yaml`` and ``zh.yaml``.
    :param language: ``auto`` or a prompt file's name.
    """

    def __init__(
        self,
        retriever: Retriever,
        llm: Callable[[], ChatLLM],
        prompts_dir: Path,
        *,
        language: str = "auto",
        history_turns: int = 3,
        rewrite_followups: bool = True,
        rewrite_max_tokens: int = 64,
        highlights: bool = True,
        check_citations: bool = True,
        passage_order: str = "best_first",
    ) -> None:
        if passage_order not in PASSAGE_ORDERS:
            raise ConfigError(f"qa.passage_order must be one of {', '.join(PASSAGE_ORDERS)}, not {passage_order!r}")
        self.passage_order = passage_order
        self.prompts_dir = prompts_dir
        self.retriever = retriever
        self.evidence = EvidenceFinder(retriever.embeddings) if highlights or check_citations else None
        self.highlights = highlights
        self.check_citations = check_citations
        self._llm_factory = llm
        self._llm: ChatLLM | None = None
        self._llm_lock = threading.Lock()
        self.prompts = {p.stem: PromptSet.load(p) for p in sorted(prompts_dir.glob("*.yaml"))}
        for needed in ("en", "zh") if language == "auto" else (language,):
            if needed not in self.prompts:
                raise ConfigError(f"qa.prompts_dir: {prompts_dir} has no {needed}.yaml")
        self.language = language
        self.history_turns = history_turns
        self.rewrite_followups = rewrite_followups
        self.rewrite_max_tokens = rewrite_max_tokens

    @property
    def loaded_llm(self) -> ChatLLM | None:
        """The chat model if it has been loaded, without loading it."""
        return self._llm

    @property
    def llm(self) -> ChatLLM:
        with self._llm_lock:
            if self._llm is None:
                self._llm = self._llm_factory()
            return self._llm

    # ------------------------------------------------------------ what callers ask of the model
    def load_model(self) -> None:
        """Load the chat model now (a warm-up) instead of on the first question."""
        self.llm.backend.load()

    def busy(self) -> bool:
        """Whether the loaded model's queue is full (a new request would wait past its limit)."""
        return self._llm is not None and self._llm.gate.full

    def model_name(self) -> str | None:
        """The loaded chat model's name; None before it is loaded."""
        return self._llm.backend.name if self._llm is not None else None

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the chat model's own tokenizer (loads the model)."""
        return self.llm.backend.count_tokens(text)

    # ------------------------------------------------------------ the chain
    def runnable(self) -> Runnable[dict[str, Any], dict[str, Any]]:
        """The LCEL chain. Input: ``question``, and optionally ``mode``, ``knowledge_bases``,
        ``history``, ``retrieval`` (a dict of retrieval options), ``generation`` (max_new_tokens,
        temperature, ...). Output: the input plus ``query``, ``passages`` and ``answer``; streaming
        yields ``query``, then ``passages``, then ``answer`` deltas."""
        return (
            RunnableLambda(self._prepare)
            | RunnablePassthrough.assign(query=RunnableLambda(self._standalone_query))
            | RunnablePassthrough.assign(passages=RunnableLambda(self._retrieve))
            | RunnablePassthrough.assign(answer=RunnableGenerator(self._generate))
        )

    def _prepare(self, inputs: dict[str, Any]) -> dict[str, Any]:
        question = str(inputs.get("question") or "").strip()
        if not question:
            raise BadRequest("the question is empty")
        mode = inputs.get("mode") or "kb"
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {list(MODES)}, not {mode!r}")
        knowledge_bases = list(inputs.get("knowledge_bases") or [])
        if mode != "chat" and not knowledge_bases and inputs.get("passages") is None:
            raise BadRequest(f"mode {mode!r} needs at least one knowledge base")
        history = normalize_history(inputs.get("history"))
        if self.history_turns >= 0:
            history = _last_turns(history, self.history_turns)
        language = self.language if self.language != "auto" else question_language(question)
        return {
            "question": question,
            "mode": mode,
            "knowledge_bases": knowledge_bases,
            "history": history,
            "language": language,
            "retrieval": dict(inputs.get("retrieval") or {}),
            "generation": dict(inputs.get("generation") or {}),
            "given": inputs.get("passages"),
            # internal: notes and timings for the record; the prompt's parts; the question's highlights
            # when the prompt marked them (the sources event then reuses them)
            "trace": {"notes": [], "timings": {}, "declined": False, "prompt": None, "question_highlights": None},
        }

    def _standalone_query(self, state: dict[str, Any]) -> str:
        question = state["question"]
        if state["mode"] == "chat" or not state["history"] or not self.rewrite_followups:
            return str(question)
        started = time.perf_counter()
        prompts = self.prompts[state["language"]]
        history = "\n".join(f"{m['role']}: {m['content']}" for m in state["history"] if m["role"] != "system")
        prompt = prompts.rewrite.format(history=history, question=question)
        rewritten = self.llm.invoke(prompt, max_new_tokens=self.rewrite_max_tokens, temperature=0.0, system="")
        rewritten = rewritten.strip().splitlines()[0].strip() if rewritten.strip() else ""
        state["trace"]["timings"]["rewrite_ms"] = round((time.perf_counter() - started) * 1000, 1)
        # a rewrite that came back empty or rambling is worse than the question itself
        if not rewritten or len(rewritten) > 4 * len(question) + 100:
            state["trace"]["notes"].append("the follow-up rewrite was unusable; searched with the question as asked")
            return str(question)
        return str(rewritten)

    def _retrieve(self, state: dict[str, Any]) -> list[SearchHit]:
        """The passages, already cut to what fits the model's context window next to the history."""
        if state["mode"] == "chat":
            return []
        started = time.perf_counter()
        if state.get("given") is not None:  # passages handed in (e.g. the gold passage in evaluation)
            hits = list(state["given"])
        else:
            hits = self.retriever.retrieve(state["query"], state["knowledge_bases"], **state["retrieval"])
        state["trace"]["timings"]["retrieval_ms"] = round((time.perf_counter() - started) * 1000, 1)
        if state["mode"] == "kb" and hits:
            prompts, llm = self.prompts[state["language"]], self.llm
            texts = self._marked(prompts, hits, state["question"], state["trace"])
            budget = fit_context(
                system=prompts.system,
                question=prompts.grounded.format(context="", question=state["question"]),
                history=state["history"],
                passages=[
                    self._passage_text(prompts, i, h, t) for i, (h, t) in enumerate(zip(hits, texts, strict=True), 1)
                ],
                count=llm.backend.count_tokens,
                window=llm.backend.context_window,
                max_new_tokens=llm.params(**state["generation"]).max_new_tokens,
            )
            state["trace"]["notes"] += budget.notes
            state["trace"]["prompt"] = (budget.history, budget.passages)
            hits = hits[: len(budget.passages)]
        return hits

    def _generate(self, chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
        state: dict[str, Any] = {}
        for chunk in chunks:  # the upstream streams its keys one by one; answer once it is whole
            state.update(chunk)
        mode = state["mode"]
        if mode == "search":
            yield ""  # retrieval only: the answer is empty, never missing
            return
        prompts = self.prompts[state["language"]]
        if mode == "kb" and not state["passages"]:
            state["trace"]["declined"] = True
            yield prompts.no_answer
            return
        llm = self.llm
        started = time.perf_counter()
        if mode == "chat":
            system, user = llm.system_prompt, state["question"]
            budget = fit_context(
                system=system,
                question=user,
                history=state["history"],
                passages=[],
                count=llm.backend.count_tokens,
                window=llm.backend.context_window,
                max_new_tokens=llm.params(**state["generation"]).max_new_tokens,
            )
            state["trace"]["notes"] += budget.notes
            history = budget.history
        else:
            history, passages = state["trace"]["prompt"]
            system = prompts.system
            shown = passages if self.passage_order == "best_first" else passages[::-1]
            user = prompts.grounded.format(context="\n\n".join(shown), question=state["question"])
        first = None
        checker = None
        if mode == "kb" and self.check_citations and self.evidence is not None:
            checker = CitationChecker(self.evidence, [h.text for h in state["passages"]])
        for delta in llm.stream_text(llm.messages(user, history, system), llm.params(**state["generation"])):
            if first is None:
                first = time.perf_counter()
            text = checker.feed(delta) if checker is not None else delta
            if text:
                yield text
        if checker is not None:
            tail = checker.flush()
            if tail:
                yield tail
            for cited, best in checker.changed:
                state["trace"]["notes"].append(
                    f"the model cited [{cited}] for a sentence that passage [{best}] supports; changed to [{best}]"
                )
        end = time.perf_counter()
        state["trace"]["timings"]["generation_ms"] = round((end - started) * 1000, 1)
        state["trace"]["timings"]["first_token_ms"] = round(((first or end) - started) * 1000, 1)

    @staticmethod
    def _passage_text(prompts: PromptSet, number: int, hit: SearchHit, text: str | None = None) -> str:
        return prompts.passage.format(n=number, source=_source_label(hit), text=hit.text if text is None else text)

    def _marked(self, prompts: PromptSet, hits: Sequence[SearchHit], question: str, trace: dict[str, Any]) -> list[str]:
        """The passages' texts as the prompt shows them: with the prompt's ``evidence`` mark around
        each passage's sentence that best matches the question, where the prompts have one (those
        highlights are kept in ``trace`` for the sources event)."""
        texts = [h.text for h in hits]
        if prompts.evidence is None or self.evidence is None:
            return texts
        started = time.perf_counter()
        trace["question_highlights"] = self.evidence.find(texts, question)
        trace["timings"]["highlights_ms"] = round((time.perf_counter() - started) * 1000, 1)
        marked = []
        for text, found in zip(texts, trace["question_highlights"], strict=True):
            if found:  # the best sentence only (find() may add a near tie)
                start, end = found[0].start, found[0].end
                text = text[:start] + prompts.evidence.format(sentence=text[start:end]) + text[end:]
            marked.append(text)
        return marked

    # ------------------------------------------------------------ front doors
    def stream(
        self,
        question: str,
        *,
        mode: str = "kb",
        knowledge_bases: Sequence[str] = (),
        history: object = None,
        retrieval: dict[str, Any] | None = None,
        generation: dict[str, Any] | None = None,
        passages: Sequence[SearchHit] | None = None,
    ) -> Iterator[ChainEvent]:
        """Events (:mod:`kb_qa.events`): :class:`Sources` once (before any text), :class:`Delta` for
        each piece of the answer, then :class:`Final` with ``Answer.to_dict()``.

        ``passages`` replaces retrieval with these passages (best first), e.g. the gold passage
        when measuring the model's own ceiling. The sources' evidence highlights follow the
        question in the sources event and the answer in the final record."""
        started = time.perf_counter()
        inputs = {
            "question": question,
            "mode": mode,
            "knowledge_bases": list(knowledge_bases),
            "history": history,
            "retrieval": retrieval,
            "generation": generation,
            "passages": list(passages) if passages is not None else None,
        }
        state: dict[str, Any] = {}
        parts: list[str] = []
        sent_sources = False
        for chunk in self.runnable().stream(inputs):
            state.update({k: v for k, v in chunk.items() if k != "answer"})
            if "passages" in chunk and not sent_sources:
                sent_sources = True
                sources = [Source.from_hit(i, h) for i, h in enumerate(chunk["passages"], 1)]
                marked = (state.get("trace") or {}).get("question_highlights")
                if marked is not None and self.highlights:  # found for the prompt's marks already
                    for source, highlights in zip(sources, marked, strict=False):  # passages cut to fit
                        source.highlights = [h.to_dict() for h in highlights]
                else:
                    self._highlight(sources, state.get("question", question), "", state)
                yield Sources(query=state.get("query", question), sources=[asdict(s) for s in sources])
            if chunk.get("answer"):
                parts.append(chunk["answer"])
                yield Delta(chunk["answer"])
        answer = self._finish(state, "".join(parts), started)
        yield Final(answer.to_dict())

    def _highlight(self, sources: list[Source], question: str, answer: str, state: dict[str, Any]) -> None:
        if self.evidence is None or not self.highlights or not sources:
            return
        started = time.perf_counter()
        found = self.evidence.find([s.text for s in sources], question, answer)
        for source, highlights in zip(sources, found, strict=True):
            source.highlights = [h.to_dict() for h in highlights]
        timings = state.setdefault("trace", {}).setdefault("timings", {})
        key = "answer_highlights_ms" if answer else "highlights_ms"
        timings[key] = round((time.perf_counter() - started) * 1000, 1)

    def ask(self, question: str, **kwargs: Any) -> Answer:
        """The whole answer at once (same arguments as :meth:`stream`)."""
        final = self.final_record(self.stream(question, **kwargs))
        sources = [Source(**s) for s in final.pop("sources")]
        return Answer(**final, sources=sources)

    @staticmethod
    def final_record(events: Iterable[ChainEvent]) -> dict[str, Any]:
        """Consume :meth:`stream`'s events and return the final record (as a dict)."""
        final: dict[str, Any] = {}
        for event in events:
            if isinstance(event, Final):
                final = event.answer
        return final

    def _finish(self, state: dict[str, Any], text: str, started: float) -> Answer:
        trace = state.get("trace") or {}
        hits: list[SearchHit] = state.get("passages") or []
        sources = [Source.from_hit(i, h) for i, h in enumerate(hits, 1)]
        cited = cited_numbers(text)
        for source in sources:
            source.cited = source.number in cited
        answered = text if state.get("mode") == "kb" and not trace.get("declined") else ""
        self._highlight(sources, state.get("question", ""), answered, state)
        timings = dict(trace.get("timings") or {})
        timings["total_ms"] = round((time.perf_counter() - started) * 1000, 1)
        models = {"embedding": self.retriever.embeddings.name}
        if self._llm is not None and ("generation_ms" in timings or "rewrite_ms" in timings):
            models["llm"] = self._llm.backend.name  # named only when it worked on this answer
        return Answer(
            question=state.get("question", ""),
            answer=text,
            mode=state.get("mode", "kb"),
            sources=sources,
            query=state.get("query", state.get("question", "")),
            declined=bool(trace.get("declined")),
            language=state.get("language", "en"),
            timings=timings,
            models=models,
            notes=list(trace.get("notes") or []),
        )


def _last_turns(history: list[Message], turns: int) -> list[Message]:
    """The last ``turns`` question-and-answer turns of ``history`` (a turn starts at a user message)."""
    if turns == 0:
        return []
    starts = [i for i, m in enumerate(history) if m["role"] == "user"]
    if len(starts) <= turns:
        return history
    return history[starts[-turns] :]
