"""The prompts of the QA chain: one file per language in ``qa.prompts_dir`` (configs/prompts).

Each file holds ``system``, ``passage`` (one numbered passage: ``{n}``, ``{source}``, ``{text}``),
``grounded`` (the user turn: ``{context}``, ``{question}``), ``rewrite`` (a follow-up made
standalone) and ``no_answer``; optionally ``evidence`` (``{sentence}``): how each passage's sentence
that best matches the question is marked inside it (kb_qa.evidence), e.g. ``"**{sentence}**"``;
without it passages are shown as stored. The shipped wording was chosen by measurement (bench/prompts.py,
docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from langchain_core.prompts import PromptTemplate

from kb_qa.errors import ConfigError

PROMPT_KEYS = ("system", "passage", "grounded", "rewrite", "no_answer")


def question_language(text: str) -> str:
    letters = [ch for ch in text if ch.isalpha()]
    cjk = sum(1 for ch in letters if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return "zh" if letters and cjk * 5 >= len(letters) else "en"


@dataclass(frozen=True)
class PromptSet:
    language: str
    system: str
    passage: PromptTemplate
    grounded: PromptTemplate
    rewrite: PromptTemplate
    no_answer: str
    evidence: PromptTemplate | None = None

    @classmethod
    def load(cls, path: Path) -> PromptSet:
        """Read and check one language's prompts.

        :raises ConfigError: for a missing file, key or placeholder.
        """
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"qa.prompts_dir: {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        missing = [k for k in PROMPT_KEYS if not isinstance((data or {}).get(k), str)]
        if missing:
            raise ConfigError(f"{path}: missing prompt(s) {missing}; every prompt file needs {list(PROMPT_KEYS)}")
        templates = {}
        for key, needed in (("passage", {"n", "source", "text"}), ("grounded", {"context", "question"})):
            templates[key] = PromptTemplate.from_template(data[key])
            absent = needed - set(templates[key].input_variables)
            if absent:
                raise ConfigError(f"{path}: the {key} prompt must use the placeholders {sorted(absent)}")
        templates["rewrite"] = PromptTemplate.from_template(data["rewrite"])
        evidence = data.get("evidence")
        if evidence is not None:
            mark = PromptTemplate.from_template(evidence) if isinstance(evidence, str) else None
            if mark is None or mark.input_variables != ["sentence"]:
                raise ConfigError(f"{path}: the evidence prompt must be text with the one placeholder {{sentence}}")
            templates["evidence"] = mark
        return cls(path.stem, data["system"].strip(), templates["passage"], templates["grounded"],
                   templates["rewrite"], data["no_answer"].strip(), templates.get("evidence"))  # fmt: skip
