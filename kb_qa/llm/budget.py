"""Fitting a prompt into the model's context window, counted in the model's own tokens.

The rule, applied in this order until everything fits in ``window - max_new_tokens``:

1. the system prompt and the question are always kept whole (never truncated, never dropped);
2. the oldest history turns are dropped first, a question and its answer together;
3. then the lowest-ranked passages are dropped, last first.

If the system prompt and the question alone do not fit, :class:`ContextTooLong` says by how much:
the question is never cut silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kb_qa.errors import KbQaError
from kb_qa.llm.base import Message


class ContextTooLong(KbQaError):
    """The question (with the system prompt) alone exceeds the model's context window."""

    code = "context_too_long"


@dataclass
class Budget:
    history: list[Message]
    passages: list[str]
    dropped_history: int = 0
    dropped_passages: int = 0
    prompt_tokens: int = 0
    notes: list[str] = field(default_factory=list)


def fit_context(
    *,
    system: str,
    question: str,
    history: list[Message],
    passages: list[str],
    count: Callable[[str], int],
    window: int,
    max_new_tokens: int,
    overhead_per_message: int = 8,
) -> Budget:
    """Keep as much history and as many passages as fit (see the module's rule).

    :param passages: best first.
    :param count: the model's token counter.
    :returns: what to send, and what was dropped.
    :raises ContextTooLong: when the system prompt and the question alone do not fit.
    """
    limit = window - max_new_tokens
    fixed = count(system) + count(question) + 3 * overhead_per_message
    if fixed > limit:
        raise ContextTooLong(
            f"the question needs {fixed} tokens with the system prompt, but the model's window of {window} "
            f"leaves {limit} after reserving {max_new_tokens} for the answer; shorten the question or lower max_tokens"
        )
    passage_costs = [count(p) + overhead_per_message for p in passages]
    history_costs = [count(m["content"]) + overhead_per_message for m in history]
    kept_history = list(history)
    kept_passages = list(passages)
    total = fixed + sum(passage_costs) + sum(history_costs)
    budget = Budget(kept_history, kept_passages)
    while total > limit and kept_history:
        # drop the oldest turn: a user message and the answer that follows it
        take = (
            2
            if len(kept_history) > 1 and kept_history[0]["role"] == "user" and kept_history[1]["role"] == "assistant"
            else 1
        )
        for _ in range(take):
            kept_history.pop(0)
            total -= history_costs.pop(0)
            budget.dropped_history += 1
    while total > limit and kept_passages:
        kept_passages.pop()
        total -= passage_costs.pop()
        budget.dropped_passages += 1
    budget.prompt_tokens = total
    if budget.dropped_history:
        budget.notes.append(f"dropped the {budget.dropped_history} oldest history message(s) to fit the context window")
    if budget.dropped_passages:
        budget.notes.append(f"dropped the {budget.dropped_passages} lowest-ranked passage(s) to fit the context window")
    return budget
