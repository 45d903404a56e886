"""The web page in headless Chromium: what it weighs, how fast it is ready, what it adds to an answer.

    .venv/bin/python bench/web.py [--questions 6] [--max-tokens 64]

Serves the real app on loopback (multilingual-e5-small, the configured chat model: by default the
bundled Qwen2.5-Coder-1.5B through llama.cpp on the CPU) over the sample
handbook, opens the page in Debian's Chromium (``/usr/bin/chromium`` or ``KBQA_CHROMIUM``) and
measures, in one run:

1. the page's weight: bytes of the HTML, scripts, style sheet and icon it loads (all from the
   service; no request leaves it);
2. time from navigation to a usable page (knowledge bases listed), median of 5 loads;
3. for each question (Chinese and English, greedy, ``--max-tokens``), typed and sent in the page:
   the time until the source cards with their evidence highlights show (and, through the API, until
   the ``sources`` event arrives; target: within 1 s of the request), the time until the first words
   show in the browser against the server's own first-token time
   (the ``done`` event's ``timings.first_token_ms``), and the time until the finished answer is
   shown against the server's ``total_ms``. The ratios say what the page (fetch, SSE parsing,
   rendering) adds on top of the service.

Writes docs/benchmarks/web.json. No target is asserted; docs/benchmarks.md quotes the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HANDBOOK_QUESTIONS, git_revision, handbook_services, machine, save_result
from kb_qa.api import create_app
from kb_qa.api.local import serving

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip

# Sends the question the way a person does (the form's submit) and resolves with browser times in
# ms: first words shown, finished answer shown (the streaming class gone), counted from the send.
ASK = """async (question) => {
  const box = document.getElementById('messages');
  const before = box.querySelectorAll('.message.assistant').length;
  return await new Promise((resolve) => {
    let first = null;
    let sources = null;
    const t0 = performance.now();
    const observer = new MutationObserver(() => {
      const answers = box.querySelectorAll('.message.assistant');
      if (answers.length <= before) return;
      const last = answers[answers.length - 1];
      const now = performance.now() - t0;
      if (sources === null && last.querySelector('details.source .source-evidence')) sources = now;
      if (first === null && last.querySelector('.answer').textContent.length > 0) first = now;
      if (!last.classList.contains('streaming')) { observer.disconnect(); resolve({first, sources, done: now}); }
    });
    observer.observe(box, {childList: true, subtree: true, characterData: true});
    document.getElementById('chat-input').value = question;
    document.getElementById('chat-form').requestSubmit();
  });
}"""


def _api_sources_ms(base: str, question: str, max_tokens: int) -> float:
    """Milliseconds from sending /chat (stream) to its `sources` event (evidence highlights included)."""
    import httpx

    body = {"question": question, "knowledge_base": "handbook", "stream": True, "temperature": 0,
            "max_tokens": max_tokens}  # fmt: skip
    started = time.perf_counter()
    with httpx.stream("POST", base + "/chat", json=body, timeout=300) as response:
        lines = response.iter_lines()  # one iterator: a response streams once
        for line in lines:
            if line.startswith("event: sources"):
                at = time.perf_counter()
                for _ in lines:  # let the answer finish before the next question
                    pass
                return 1000 * (at - started)
    raise RuntimeError("no sources event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=6, help="questions asked through the page (default 6)")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("KBQA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        sys.exit(f"Chromium not found at {chromium}: run scripts/install-browser.sh (or set KBQA_CHROMIUM)")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="kbqa-web-") as tmp:
        services = handbook_services(tmp)
        settings = services.settings
        with serving(create_app(settings, services=services)) as base, sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            sizes: dict[str, int] = {}
            outside: list[str] = []

            def on_response(response: object) -> None:
                url = response.url  # type: ignore[attr-defined]
                if not url.startswith(base):
                    outside.append(url)
                elif "/static/" in url or url == base + "/":
                    sizes[url[len(base) :]] = len(response.body())  # type: ignore[attr-defined]

            page.on("response", on_response)
            loads = []
            for _ in range(5):
                page.goto(base + "/")
                page.wait_for_selector('.kb-item[data-kb="handbook"]')
                loads.append(page.evaluate("performance.now()"))  # ms since this navigation started
            results["page"] = {
                "files": sizes,
                "bytes": sum(sizes.values()),
                "requests_outside_the_service": outside,
                "ready_ms_median": round(statistics.median(loads), 1),
            }
            print(f"page: {sum(sizes.values())} bytes in {len(sizes)} files, nothing from outside: {not outside}; "
                  f"usable after {results['page']['ready_ms_median']} ms (median of 5 loads)")  # fmt: skip

            page.click("#settings summary")
            page.fill("#set-temperature", "0")
            page.fill("#set-max-tokens", str(args.max_tokens))
            page.click("#settings summary")
            page.evaluate(ASK, "warm up")
            page.click("#chat-clear")
            rows = []
            for question in (HANDBOOK_QUESTIONS * 3)[: args.questions]:
                browser_ms = page.evaluate(ASK, question)
                server = page.evaluate(
                    """() => { const convs = JSON.parse(localStorage.getItem('kbqa.conversations'));
                               const id = JSON.parse(localStorage.getItem('kbqa.currentConv'));
                               const conv = convs.find((c) => c.id === id);
                               return conv.messages[conv.messages.length - 1].timings; }"""
                )
                page.click("#chat-clear")  # one question per conversation: no follow-up rewriting
                row = {
                    "question": question,
                    "browser_sources_ms": round(browser_ms["sources"] or browser_ms["done"], 1),
                    "api_sources_ms": round(_api_sources_ms(base, question, args.max_tokens), 1),
                    "browser_first_words_ms": round(browser_ms["first"], 1),
                    "server_first_token_ms": round(server["first_token_ms"], 1),
                    "browser_done_ms": round(browser_ms["done"], 1),
                    "server_total_ms": round(server["total_ms"], 1),
                }
                rows.append(row)
                print(row, flush=True)
            browser.close()

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 1)  # type: ignore[misc]

    results["answers"] = {
        "questions": len(rows),
        "max_tokens": args.max_tokens,
        "browser_sources_ms_median": median("browser_sources_ms"),
        "api_sources_ms_median": median("api_sources_ms"),
        "browser_first_words_ms_median": median("browser_first_words_ms"),
        "server_first_token_ms_median": median("server_first_token_ms"),
        "first_words_ratio": round(median("browser_first_words_ms") / median("server_first_token_ms"), 3),
        "browser_done_ms_median": median("browser_done_ms"),
        "server_total_ms_median": median("server_total_ms"),
        "done_ratio": round(median("browser_done_ms") / median("server_total_ms"), 3),
        "rows": rows,
    }
    a = results["answers"]
    print(f"sources with evidence shown: browser {a['browser_sources_ms_median']} ms, API sources event "
          f"{a['api_sources_ms_median']} ms after the request (target <= 1000 ms)")  # fmt: skip
    print(f"first words: browser {a['browser_first_words_ms_median']} ms vs server {a['server_first_token_ms_median']}"
          f" ms (x{a['first_words_ratio']}); finished: browser {a['browser_done_ms_median']} ms vs server "
          f"{a['server_total_ms_median']} ms (x{a['done_ratio']})")  # fmt: skip
    path = save_result("web", {"machine": machine(), "revision": git_revision(), **results})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
