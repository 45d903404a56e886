// A small, safe Markdown renderer for answers: chat models write lists, bold, code and headings.
// It builds DOM nodes only (text always goes through text nodes, never innerHTML), so nothing a
// model or a document says can inject markup. Handled: ``` fenced code ```, # headings,
// - / * / + and 1. lists, paragraphs (single line breaks kept), **bold**, `code`. The caller's
// `inline(parent, text)` renders plain runs (the page turns citations [n] into links there).
// An unclosed fence or ** while an answer is still streaming renders as far as it has come.
"use strict";

window.KBQA_MARKDOWN = (() => {
  const FENCE = /^\s*```/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*)$/;
  const ITEM = /^\s{0,3}(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/;

  function spans(parent, text, inline) {
    // `code` first (nothing inside it is Markdown), then **bold**, then plain runs
    const parts = text.split(/(`[^`\n]+`)/);
    for (const part of parts) {
      if (part.length > 2 && part.startsWith("`") && part.endsWith("`")) {
        const code = document.createElement("code");
        code.textContent = part.slice(1, -1);
        parent.append(code);
        continue;
      }
      const bolds = part.split(/\*\*(?=\S)([^*\n]*?\S)\*\*/);
      bolds.forEach((piece, i) => {
        if (!piece) return;
        if (i % 2 === 1) {
          const strong = document.createElement("strong");
          inline(strong, piece);
          parent.append(strong);
        } else inline(parent, piece);
      });
    }
  }

  function render(container, text, inline) {
    container.replaceChildren();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let paragraph = null;
    let list = null;
    const closeParagraph = () => {
      paragraph = null;
    };
    const closeList = () => {
      list = null;
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (FENCE.test(line)) {
        closeParagraph();
        closeList();
        const body = [];
        for (i++; i < lines.length && !FENCE.test(lines[i]); i++) body.push(lines[i]);
        const pre = document.createElement("pre");
        const code = document.createElement("code");
        code.textContent = body.join("\n");
        pre.append(code);
        container.append(pre);
        continue;
      }
      if (!line.trim()) {
        closeParagraph();
        closeList();
        continue;
      }
      const heading = HEADING.exec(line);
      if (heading) {
        closeParagraph();
        closeList();
        const node = document.createElement("p");
        node.className = "md-heading";
        const strong = document.createElement("strong");
        spans(strong, heading[2], inline);
        node.append(strong);
        container.append(node);
        continue;
      }
      const item = ITEM.exec(line);
      if (item) {
        closeParagraph();
        const ordered = item[2] !== undefined;
        if (!list || (list.tagName === "OL") !== ordered) {
          list = document.createElement(ordered ? "ol" : "ul");
          if (ordered && item[2] !== "1") list.start = Number(item[2]);
          container.append(list);
        }
        const li = document.createElement("li");
        spans(li, item[3], inline);
        list.append(li);
        continue;
      }
      if (list && /^\s{2,}\S/.test(line)) {
        // an indented line continues the last item
        const last = list.lastElementChild;
        last.append("\n");
        spans(last, line.trim(), inline);
        continue;
      }
      closeList();
      if (!paragraph) {
        paragraph = document.createElement("p");
        container.append(paragraph);
      } else paragraph.append("\n");
      spans(paragraph, line, inline);
    }
  }

  return { render };
})();
