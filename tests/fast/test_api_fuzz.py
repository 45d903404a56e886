"""The API fuzzed: schemathesis over the real app's /openapi.json, with STAND-IN models.

Every operation gets generated requests, valid and invalid, with a bounded number of examples;
the checks are schemathesis's own: no server error, every status declared in the OpenAPI
responses, response bodies matching their declared schemas, invalid requests refused.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from kb_qa.api import create_app
from kb_qa.llm import ChatLLM
from kb_qa.services import build_services
from kb_qa.settings import load_settings
from tests.helpers import ANY_SCORE, SAMPLES
from tests.standins import StandInChatBackend, StandInEmbeddings

ROOT = Path(tempfile.mkdtemp(prefix="kbqa-fuzz-"))
atexit.register(shutil.rmtree, ROOT, True)
SETTINGS = load_settings(environ={}, overrides={"paths": {"kb_root": str(ROOT / "kb")}, **ANY_SCORE})
LLM = ChatLLM(backend=StandInChatBackend(), temperature=0.0, max_new_tokens=16)
SERVICES = build_services(SETTINGS, embeddings=StandInEmbeddings(), llm=lambda: LLM)
SERVICES.knowledge_bases.create("hb")
SERVICES.knowledge_bases.add_files("hb", [SAMPLES / "employee-handbook.md"])
APP = create_app(SETTINGS, services=SERVICES, load_models=False)

# Valid-by-schema requests may still be refused for what a schema cannot say — 400 (the last chat
# message is not the user's, a question set's rule) — or, for uploads, 415/422 for the files' content
# (an empty file holds no text). Anything else that refuses a schema-valid request is a finding.
# Uploads ignore form fields they do not know (as browsers' forms send them): the multipart schema's
# "no other fields" is the one rule not enforced, so that check is off for them.
CONFIG = schemathesis.config.SchemathesisConfig.from_str("""
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-path-regex = "(documents|upload_file)"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409", "413", "415", "422"]
checks.negative_data_rejection.enabled = false
""")
# examples per operation: 10, the same every run (KBQA_FUZZ_EXAMPLES=200 for a long, random search)
EXAMPLES = int(os.environ.get("KBQA_FUZZ_EXAMPLES", "10"))
DERANDOMIZE = "KBQA_FUZZ_EXAMPLES" not in os.environ
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))
def test_api(case: schemathesis.Case) -> None:
    case.call_and_validate()
