// kb-qa web page. Talks to the service only through its public HTTP API (see /docs):
//   GET  /ready                                   server status and the embedding model
//   GET|POST|DELETE /knowledge_bases[/{kb}]       knowledge bases with their counts
//   POST /knowledge_bases/{kb}/documents          uploads (one request per file, for its own progress bar)
//   GET  /knowledge_bases/{kb}/documents          the document list
//   GET  /knowledge_bases/{kb}/documents/{doc}/content   download the original
//   DELETE /knowledge_bases/{kb}/documents/{doc}  delete
//   POST /chat (stream: true)                     Server-Sent Events: sources, delta…, done | error
// Keys (when the server has server.api_keys / admin_keys) go in "Authorization: Bearer".
// Conversations, settings, the key and the language choice are kept in this browser's localStorage.
"use strict";

(() => {
  const TEXT = window.KBQA_TEXT;
  const store = {
    get(key, fallback) {
      try {
        const raw = localStorage.getItem("kbqa." + key);
        return raw === null ? fallback : JSON.parse(raw);
      } catch (_) {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem("kbqa." + key, JSON.stringify(value));
      } catch (_) {
        /* storage full or disabled: the page still works for this visit */
      }
    },
    remove(key) {
      try {
        localStorage.removeItem("kbqa." + key);
      } catch (_) {
        /* ignore */
      }
    },
  };

  const $ = (id) => document.getElementById(id);
  const MAX_CONVERSATIONS = 50;

  const state = {
    lang: store.get("lang", null) || browserLanguage(),
    key: store.get("key", "") || sessionKey(),
    kbs: [],
    currentKb: store.get("currentKb", null),
    conversations: store.get("conversations", []),
    currentConv: store.get("currentConv", null),
    settings: Object.assign({ top_k: 4, score_threshold: null, temperature: null, max_tokens: null },
      store.get("settings", {})),
    docs: [],
    view: "chat",
    streaming: null, // {controller, conv}
    uploads: Promise.resolve(),
  };

  function browserLanguage() {
    const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    return String(langs[0] || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  }

  function sessionKey() {
    try {
      return sessionStorage.getItem("kbqa.key") || "";
    } catch (_) {
      return "";
    }
  }

  // ------------------------------------------------------------------ text
  function t(key, vars) {
    const table = TEXT[state.lang] || TEXT.en;
    let text = table[key] !== undefined ? table[key] : (TEXT.en[key] !== undefined ? TEXT.en[key] : key);
    if (vars) {
      for (const [name, value] of Object.entries(vars)) text = text.split("{" + name + "}").join(String(value));
    }
    return text;
  }

  function applyLanguage() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    document.title = "kb-qa · " + t("app.title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
    $("lang-switch").textContent = t("lang.other");
    renderAll();
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function formatSize(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function formatDate(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso || "";
    return date.toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    });
  }

  // ------------------------------------------------------------------ API
  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function headers(extra) {
    const result = Object.assign({}, extra || {});
    if (state.key) result.Authorization = "Bearer " + state.key;
    return result;
  }

  async function failureOf(response) {
    let code = "http_error";
    let message = response.statusText || "";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch (_) {
      /* not JSON: keep the status text */
    }
    return new ApiFailure(response.status, code, message);
  }

  async function api(method, path, body) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}),
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (_) {
      throw new ApiFailure(0, "network", t("error.network"));
    }
    if (!response.ok) throw await failureOf(response);
    if (response.status === 204) return null;
    return response.json();
  }

  function describe(error) {
    if (!(error instanceof ApiFailure)) return String(error && error.message ? error.message : error);
    if (error.status === 0) return t("error.network");
    const lead = TEXT.en["error." + error.status] !== undefined ? t("error." + error.status)
      : t("error.generic", { status: error.status });
    return error.message ? lead + ": " + error.message : lead;
  }

  function toast(message, kind) {
    const node = el("div", { class: "toast " + (kind || "error") },
      el("span", { text: message }),
      el("button", { class: "toast-close", type: "button", "aria-label": "×", onclick: () => node.remove() }, "×"));
    $("toasts").append(node);
    setTimeout(() => node.remove(), kind === "info" ? 4000 : 12000);
  }

  function report(error) {
    if (error instanceof ApiFailure && error.status === 401) askForKey(t(state.key ? "key.rejected" : "key.needed"));
    toast(describe(error), "error");
  }

  // ------------------------------------------------------------------ key
  function askForKey(reason) {
    $("key-reason").textContent = reason ? reason + " " + t("key.help") : t("key.help");
    $("key-input").value = state.key;
    if (!$("key-dialog").open) $("key-dialog").showModal();
  }

  function setKey(key, remember) {
    state.key = key;
    store.remove("key");
    try {
      sessionStorage.removeItem("kbqa.key");
      if (key && remember) store.set("key", key);
      else if (key) sessionStorage.setItem("kbqa.key", key);
    } catch (_) {
      /* ignore */
    }
    $("key-button").classList.toggle("has-key", Boolean(key));
  }

  // ------------------------------------------------------------------ server status
  let statusTimer = null;
  async function refreshStatus() {
    const node = $("server-status");
    try {
      const response = await fetch("/ready", { headers: headers() });
      if (response.status === 401) {
        node.textContent = t(state.key ? "key.rejected" : "key.needed");
        node.className = "server-status warn";
        return false;
      }
      const body = await response.json();
      if (body.ready) {
        node.textContent = t("status.ready", { model: body.embedding_model });
        node.className = "server-status ok";
      } else {
        const reason = (body.problems || []).join("; ") || (body.error && body.error.message) || "";
        node.textContent = reason.includes("loading") ? t("status.loading") : t("status.down", { reason });
        node.className = "server-status warn";
        clearTimeout(statusTimer);
        statusTimer = setTimeout(refreshStatus, 3000); // until the models are loaded
      }
      return true;
    } catch (_) {
      node.textContent = t("status.offline");
      node.className = "server-status bad";
      return true;
    }
  }

  // ------------------------------------------------------------------ knowledge bases
  async function loadKbs() {
    try {
      state.kbs = await api("GET", "/knowledge_bases");
    } catch (error) {
      state.kbs = [];
      report(error);
    }
    if (state.currentKb && !state.kbs.some((kb) => kb.name === state.currentKb)) state.currentKb = null;
    if (!state.currentKb && state.kbs.length) state.currentKb = state.kbs[0].name;
    store.set("currentKb", state.currentKb);
    renderKbs();
    renderChatKbSelect();
    await loadDocuments();
  }

  function currentKbInfo() {
    return state.kbs.find((kb) => kb.name === state.currentKb) || null;
  }

  function renderKbs() {
    const list = $("kb-list");
    list.replaceChildren();
    for (const kb of state.kbs) {
      const selected = kb.name === state.currentKb;
      list.append(el("li", {},
        el("button", {
          type: "button", class: "kb-item" + (selected ? " selected" : ""), "data-kb": kb.name,
          "aria-pressed": selected ? "true" : "false", title: kb.description || kb.name,
          onclick: () => selectKb(kb.name),
        },
        el("span", { class: "kb-name", text: kb.name }),
        el("span", { class: "kb-counts", text: t("kb.counts", { docs: kb.document_count, chunks: kb.chunk_count }) }))));
    }
    $("kb-empty").hidden = state.kbs.length > 0;
  }

  async function selectKb(name) {
    state.currentKb = name;
    state.docs = [];
    store.set("currentKb", name);
    renderKbs();
    renderChatKbSelect();
    await loadDocuments();
  }

  async function createKb(event) {
    event.preventDefault();
    const name = $("kb-name").value.trim();
    const description = $("kb-description").value.trim();
    if (!name) return;
    try {
      await api("POST", "/knowledge_bases", { name, description });
    } catch (error) {
      report(error);
      return;
    }
    $("kb-create").reset();
    toast(t("kb.created", { name }), "info");
    state.currentKb = name;
    await loadKbs();
    showView("docs");
  }

  async function deleteKb() {
    const kb = currentKbInfo();
    if (!kb) return;
    if (!(await confirmAction(t("kb.confirm_delete", { name: kb.name, docs: kb.document_count })))) return;
    try {
      await api("DELETE", "/knowledge_bases/" + encodeURIComponent(kb.name));
    } catch (error) {
      report(error);
      return;
    }
    toast(t("kb.deleted", { name: kb.name }), "info");
    state.currentKb = null;
    await loadKbs();
  }

  function confirmAction(message) {
    const dialog = $("confirm-dialog");
    $("confirm-text").textContent = message;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    });
  }

  // ------------------------------------------------------------------ documents
  function docPath(kb, doc) {
    return "/knowledge_bases/" + encodeURIComponent(kb) + "/documents/" + doc.split("/").map(encodeURIComponent).join("/");
  }

  async function loadDocuments() {
    const kb = state.currentKb;
    if (!kb) {
      state.docs = [];
      renderDocuments();
      return;
    }
    let docs = [];
    try {
      docs = await api("GET", "/knowledge_bases/" + encodeURIComponent(kb) + "/documents");
    } catch (error) {
      if (state.currentKb === kb) report(error);
    }
    if (state.currentKb !== kb) return;
    state.docs = docs;
    renderDocuments();
  }

  function renderDocuments() {
    const kb = state.currentKb;
    $("docs-none").hidden = Boolean(kb);
    $("docs-body").hidden = !kb;
    if (!kb) return;
    renderKbHeader();
    const docs = state.docs;
    const rows = $("doc-rows");
    rows.replaceChildren();
    for (const doc of docs) {
      const failed = doc.status !== "indexed";
      rows.append(el("tr", { "data-doc": doc.path, class: failed ? "failed" : "" },
        el("td", { class: "doc-name" }, el("span", { text: doc.path }),
          failed && doc.error ? el("div", { class: "error-text", text: doc.error }) : null),
        el("td", {}, el("span", { class: "badge " + (failed ? "bad" : "ok"), text: t("status." + doc.status) })),
        el("td", { class: "num", text: formatSize(doc.size) }),
        el("td", { class: "num", text: String(doc.chunk_count) }),
        el("td", { class: "date", text: formatDate(doc.updated_at) }),
        el("td", { class: "actions" },
          el("button", { type: "button", class: "small ghost", "data-action": "download",
            onclick: () => download(kb, doc.path) }, t("docs.download")),
          el("button", { type: "button", class: "small danger", "data-action": "delete",
            onclick: () => deleteDocument(kb, doc.path) }, t("docs.delete")))));
    }
    $("doc-table").hidden = docs.length === 0;
    $("docs-empty").hidden = docs.length > 0;
  }

  function renderKbHeader() {
    const kb = currentKbInfo();
    if (!kb) return;
    $("kb-title").textContent = kb.name + (kb.description ? " — " + kb.description : "");
    $("kb-meta").textContent = t("kb.meta", {
      docs: kb.document_count, chunks: kb.chunk_count, model: kb.embedding_model, date: formatDate(kb.created_at),
    });
  }

  async function download(kb, doc) {
    let response;
    try {
      response = await fetch(docPath(kb, doc) + "/content", { headers: headers() });
    } catch (_) {
      toast(t("error.network"));
      return;
    }
    if (!response.ok) {
      report(await failureOf(response));
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: doc.split("/").pop() });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  async function deleteDocument(kb, doc) {
    if (!(await confirmAction(t("docs.confirm_delete", { name: doc, kb })))) return;
    try {
      await api("DELETE", docPath(kb, doc));
    } catch (error) {
      report(error);
      return;
    }
    toast(t("docs.deleted", { name: doc }), "info");
    await loadKbs();
  }

  // ------------------------------------------------------------------ uploads
  function addFiles(files) {
    const kb = state.currentKb;
    if (!kb) {
      toast(t("upload.no_kb"));
      return;
    }
    for (const file of files) {
      const bar = el("progress", { max: "100", value: "0" });
      const status = el("span", { class: "upload-status", text: t("upload.queued") });
      const row = el("li", { class: "upload queued", "data-file": file.name },
        el("span", { class: "upload-name", text: file.name }),
        el("span", { class: "upload-size muted", text: formatSize(file.size) }), bar, status);
      $("upload-list").prepend(row);
      // one file at a time: the server indexes one upload per knowledge base at a time anyway,
      // and each file keeps its own bar and result
      state.uploads = state.uploads.then(() => uploadOne(kb, file, row, bar, status));
    }
  }

  function uploadOne(kb, file, row, bar, status) {
    return new Promise((resolve) => {
      const form = new FormData();
      form.append("files", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/knowledge_bases/" + encodeURIComponent(kb) + "/documents");
      if (state.key) xhr.setRequestHeader("Authorization", "Bearer " + state.key);
      row.className = "upload sending";
      status.textContent = t("upload.sending", { percent: 0 });
      xhr.upload.onprogress = (event) => {
        if (!event.lengthComputable) return;
        const percent = Math.round((event.loaded / event.total) * 100);
        bar.value = percent;
        status.textContent = t("upload.sending", { percent });
      };
      xhr.upload.onload = () => {
        bar.value = 100;
        bar.removeAttribute("value"); // indeterminate while the server reads and embeds
        row.className = "upload indexing";
        status.textContent = t("upload.indexing");
      };
      const finish = (ok, text) => {
        bar.max = 100;
        bar.value = 100;
        row.className = "upload " + (ok ? "done" : "failed");
        status.textContent = text;
        resolve();
        refreshAfterUpload(kb);
      };
      xhr.onload = () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (_) {
          /* not JSON */
        }
        if (xhr.status >= 200 && xhr.status < 300 && body && body.files && body.files.length) {
          const result = body.files[0];
          if (result.action === "failed") finish(false, t("upload.failed", { reason: uploadReason(422, result.error, file.name) }));
          else finish(true, t("upload." + result.action, { chunks: result.chunks }));
          return;
        }
        const message = body && body.error ? body.error.message : xhr.statusText;
        if (xhr.status === 401) askForKey(t(state.key ? "key.rejected" : "key.needed"));
        finish(false, t("upload.failed", { reason: uploadReason(xhr.status, message, file.name) }));
      };
      xhr.onerror = () => finish(false, t("upload.failed", { reason: t("error.network") }));
      xhr.send(form);
    });
  }

  // "no file was indexed; a.pdf: malformed: the file is damaged …" → "Could not read the file: the file is damaged …"
  function uploadReason(status, message, name) {
    let reason = String(message || "").replace(/^no file was indexed; /, "");
    if (reason.startsWith(name + ": ")) reason = reason.slice(name.length + 2);
    reason = reason.replace(/^[a-z_]+: /, "");
    if (status === 422) return t("upload.unreadable") + (reason ? ": " + reason : "");
    return describe(new ApiFailure(status, "", reason));
  }

  let refreshTimer = null;
  function refreshAfterUpload(kb) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(async () => {
      if (state.currentKb === kb) await loadKbs();
    }, 50);
  }

  function setUpDropZone() {
    const zone = $("drop-zone");
    const stop = (event) => {
      event.preventDefault();
      event.stopPropagation();
    };
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        stop(event);
        zone.classList.add("over");
      });
    }
    zone.addEventListener("dragleave", (event) => {
      stop(event);
      zone.classList.remove("over");
    });
    zone.addEventListener("drop", (event) => {
      stop(event);
      zone.classList.remove("over");
      if (event.dataTransfer && event.dataTransfer.files.length) addFiles(Array.from(event.dataTransfer.files));
    });
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") $("file-input").click();
    });
    $("file-input").addEventListener("change", (event) => {
      addFiles(Array.from(event.target.files));
      event.target.value = "";
    });
    // a file dropped outside the zone must not make the browser leave the page
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }

  // ------------------------------------------------------------------ conversations
  function newConversation() {
    const conv = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "",
      kb: state.currentKb, messages: [] };
    state.conversations.unshift(conv);
    state.conversations = state.conversations.slice(0, MAX_CONVERSATIONS);
    state.currentConv = conv.id;
    saveConversations();
    return conv;
  }

  function currentConversation() {
    return state.conversations.find((c) => c.id === state.currentConv) || null;
  }

  function saveConversations() {
    store.set("conversations", state.conversations);
    store.set("currentConv", state.currentConv);
  }

  function renderConversations() {
    const list = $("conv-list");
    list.replaceChildren();
    for (const conv of state.conversations) {
      const selected = conv.id === state.currentConv;
      list.append(el("li", { class: selected ? "selected" : "" },
        el("button", { type: "button", class: "conv-item", "aria-pressed": selected ? "true" : "false",
          onclick: () => {
            if (state.streaming) return;
            state.currentConv = conv.id;
            saveConversations();
            renderConversations();
            renderChatKbSelect();
            renderMessages();
            showView("chat");
          } }, conv.title || t("conv.untitled")),
        el("button", { type: "button", class: "conv-delete ghost small", title: t("conv.delete"),
          "aria-label": t("conv.delete"), onclick: () => deleteConversation(conv.id) }, "×")));
    }
  }

  function deleteConversation(id) {
    if (state.streaming && state.streaming.conv.id === id) return;
    state.conversations = state.conversations.filter((c) => c.id !== id);
    if (state.currentConv === id) state.currentConv = state.conversations.length ? state.conversations[0].id : null;
    if (!currentConversation()) newConversation();
    saveConversations();
    renderConversations();
    renderChatKbSelect();
    renderMessages();
  }

  function clearConversation() {
    const conv = currentConversation();
    if (!conv || state.streaming) return;
    conv.messages = [];
    conv.title = "";
    saveConversations();
    renderConversations();
    renderMessages();
  }

  function renderChatKbSelect() {
    const select = $("chat-kb");
    const conv = currentConversation();
    // an untouched conversation follows the knowledge base picked on the left
    const wanted = conv && (conv.messages.length || conv.kbChosen) ? conv.kb : state.currentKb;
    select.replaceChildren(el("option", { value: "" }, t("chat.plain")),
      ...state.kbs.map((kb) => el("option", { value: kb.name }, kb.name)));
    select.value = wanted && state.kbs.some((kb) => kb.name === wanted) ? wanted : "";
  }

  // ------------------------------------------------------------------ messages
  const CITATION = /\[(\d+(?:\s*[,，、]\s*\d+)*)\]|【(\d+(?:\s*[,，、]\s*\d+)*)】/g;

  // The answer, its Markdown rendered (markdown.js), with each [n] / 【n】 that names a source
  // turned into a link to that source's card.
  function renderAnswer(container, text, sources, anchor) {
    const known = new Set((sources || []).map((s) => s.number));
    window.KBQA_MARKDOWN.render(container, text, (parent, run) => linkCitations(parent, run, known, anchor));
  }

  function linkCitations(parent, text, known, anchor) {
    let last = 0;
    for (const match of text.matchAll(CITATION)) {
      const numbers = (match[1] || match[2]).split(/\s*[,，、]\s*/).map(Number);
      if (!numbers.some((n) => known.has(n))) continue;
      parent.append(text.slice(last, match.index));
      const [open, close] = match[1] !== undefined ? ["[", "]"] : ["【", "】"];
      parent.append(open);
      numbers.forEach((n, i) => {
        if (i) parent.append(",");
        if (known.has(n)) {
          parent.append(el("a", { class: "cite", href: "#" + anchor + "-" + n, "data-source": String(n),
            onclick: (event) => {
              event.preventDefault();
              openSource(anchor, n);
            } }, String(n)));
        } else {
          parent.append(String(n));
        }
      });
      parent.append(close);
      last = match.index + match[0].length;
    }
    parent.append(text.slice(last));
  }

  function openSource(anchor, n) {
    const card = document.getElementById(anchor + "-" + n);
    if (!card) return;
    card.open = true;
    card.classList.remove("flash");
    void card.offsetWidth; // restart the highlight animation
    card.classList.add("flash");
    card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  // The passage with its evidence highlights (the sentences that best support the answer, or the
  // question before the answer is there) as <mark> nodes. Offsets count Unicode code points (Python's
  // str indices), so the text is split with Array.from, not by UTF-16 units.
  function evidenceText(text, highlights) {
    const chars = Array.from(text);
    const spans = (highlights || []).filter((h) => h.end > h.start && h.start >= 0 && h.end <= chars.length)
      .slice().sort((a, b) => a.start - b.start);
    const nodes = [];
    let at = 0;
    for (const span of spans) {
      if (span.start < at) continue; // overlapping spans: keep the first
      if (span.start > at) nodes.push(document.createTextNode(chars.slice(at, span.start).join("")));
      nodes.push(el("mark", { class: "evidence", text: chars.slice(span.start, span.end).join("") }));
      at = span.end;
    }
    if (at < chars.length) nodes.push(document.createTextNode(chars.slice(at).join("")));
    return nodes;
  }

  function evidenceLine(source) {
    const best = (source.highlights || [])[0];
    if (!best) return null;
    const sentence = Array.from(source.text).slice(best.start, best.end).join("").replace(/\s+/g, " ");
    return el("span", { class: "source-evidence", title: t("source.evidence"), text: "» " + sentence });
  }

  function sourceCards(sources, anchor) {
    return sources.map((source) => el("details", { class: "source" + (source.cited ? " cited" : ""),
      id: anchor + "-" + source.number, "data-source": String(source.number), "data-document": source.document },
    el("summary", {},
      el("span", { class: "source-number", text: "[" + source.number + "]" }),
      el("span", { class: "source-file", text: source.document }),
      source.page ? el("span", { class: "muted", text: t("source.page", { page: source.page }) }) : null,
      el("span", { class: "source-score", text: t("source.score", { score: Number(source.score).toFixed(3) }) }),
      source.cited ? el("span", { class: "badge ok", text: t("source.cited") }) : null,
      evidenceLine(source)),
    el("div", { class: "source-body" },
      el("div", { class: "muted source-where",
        text: [source.kb, source.heading].filter(Boolean).join(" › ") }),
      el("blockquote", { class: "source-text" }, ...evidenceText(source.text, source.highlights)))));
  }

  function messageNode(conv, message, index) {
    const anchor = "src-" + conv.id + "-" + index;
    if (message.role === "user") {
      return el("div", { class: "message user" }, el("div", { class: "who", text: t("chat.you") }),
        el("div", { class: "bubble", text: message.content }));
    }
    const answer = el("div", { class: "answer" });
    renderAnswer(answer, message.content || "", message.sources, anchor);
    const status = el("div", { class: "message-status muted" });
    if (message.pending === "search") status.textContent = t("chat.searching");
    else if (message.pending === "write" && !message.content) status.textContent = t("chat.thinking");
    else if (message.stopped) status.textContent = t("chat.stopped");
    else if (message.declined) status.textContent = t("chat.declined");
    else if (message.timings && message.timings.total_ms) {
      status.textContent = t("chat.timing", { total: (message.timings.total_ms / 1000).toFixed(1),
        first: ((message.timings.first_token_ms || message.timings.total_ms) / 1000).toFixed(1) });
    }
    const sources = message.sources || [];
    return el("div", { class: "message assistant" + (message.pending ? " streaming" : ""), "data-index": String(index) },
      el("div", { class: "who", text: t("chat.assistant") }),
      el("div", { class: "bubble" }, answer,
        message.error ? el("div", { class: "error-text", text: message.error }) : null, status,
        sources.length ? el("div", { class: "sources" }, el("div", { class: "sources-title", text: t("chat.sources") }),
          sourceCards(sources, anchor)) : null));
  }

  function renderMessages() {
    const conv = currentConversation();
    const box = $("messages");
    box.replaceChildren();
    const messages = conv ? conv.messages : [];
    messages.forEach((message, index) => box.append(messageNode(conv, message, index)));
    $("chat-empty").hidden = messages.length > 0;
    box.scrollTop = box.scrollHeight;
  }

  function updateMessage(conv, index) {
    if (currentConversation() !== conv) return;
    const box = $("messages");
    const old = box.querySelector('.message[data-index="' + index + '"]');
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const fresh = messageNode(conv, conv.messages[index], index);
    if (old) {
      // keep opened source cards open while the answer grows
      for (const card of old.querySelectorAll("details.source[open]")) {
        const twin = fresh.querySelector('details.source[data-source="' + card.dataset.source + '"]');
        if (twin) twin.open = true;
      }
      old.replaceWith(fresh);
    } else box.append(fresh);
    if (nearBottom) box.scrollTop = box.scrollHeight;
  }

  function historyOf(conv) {
    const history = [];
    for (const message of conv.messages) {
      if (message.pending || message.error || message.stopped) continue;
      if (message.role === "user" || message.content) history.push({ role: message.role, content: message.content });
    }
    // a question whose answer failed is not history either
    const clean = [];
    for (let i = 0; i < history.length; i++) {
      if (history[i].role === "user" && history[i + 1] && history[i + 1].role === "assistant") {
        clean.push(history[i], history[i + 1]);
        i++;
      }
    }
    return clean;
  }

  function numberOrNull(id) {
    const raw = $(id).value.trim();
    if (raw === "") return null;
    const value = Number(raw);
    return Number.isFinite(value) ? value : null;
  }

  function readSettings() {
    state.settings = {
      top_k: numberOrNull("set-top-k"),
      score_threshold: numberOrNull("set-threshold"),
      temperature: numberOrNull("set-temperature"),
      max_tokens: numberOrNull("set-max-tokens"),
    };
    store.set("settings", state.settings);
  }

  function showSettings() {
    const s = state.settings;
    $("set-top-k").value = s.top_k ?? "";
    $("set-threshold").value = s.score_threshold ?? "";
    $("set-temperature").value = s.temperature ?? "";
    $("set-max-tokens").value = s.max_tokens ?? "";
  }

  async function ask(event) {
    event.preventDefault();
    if (state.streaming) return;
    const question = $("chat-input").value.trim();
    if (!question) return;
    let conv = currentConversation() || newConversation();
    const kb = $("chat-kb").value;
    conv.kb = kb || null;
    const history = historyOf(conv);
    const body = { question, stream: true, history };
    if (kb) body.knowledge_bases = [kb];
    for (const [name, value] of Object.entries(state.settings)) {
      if (value !== null && value !== undefined) body[name] = name === "top_k" || name === "max_tokens" ? Math.round(value) : value;
    }
    if (!conv.title) conv.title = question.slice(0, 40);
    conv.messages.push({ role: "user", content: question });
    const answer = { role: "assistant", content: "", sources: [], pending: kb ? "search" : "write" };
    conv.messages.push(answer);
    const index = conv.messages.length - 1;
    $("chat-input").value = "";
    saveConversations();
    renderConversations();
    renderMessages();
    const controller = new AbortController();
    state.streaming = { controller, conv };
    setBusy(true);
    try {
      const response = await fetch("/chat", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) throw await failureOf(response);
      await readEvents(response, (name, data) => {
        if (name === "sources") {
          answer.sources = data.sources.map((s) => Object.assign({ cited: false }, s));
          answer.pending = "write";
        } else if (name === "delta") {
          answer.content += data.text;
          answer.pending = "write";
        } else if (name === "done") {
          answer.content = data.answer;
          answer.sources = data.sources;
          answer.timings = data.timings;
          answer.declined = data.declined;
          delete answer.pending;
        } else if (name === "error") {
          answer.error = describe(new ApiFailure(500, data.code, data.message));
          delete answer.pending;
        }
        updateMessage(conv, index);
      });
      if (answer.pending) {
        answer.error = t("error.network");
        delete answer.pending;
      }
    } catch (error) {
      delete answer.pending;
      if (error && error.name === "AbortError") answer.stopped = true;
      else {
        if (error instanceof ApiFailure && error.status === 404 && kb) {
          answer.error = t("chat.kb_gone", { name: kb });
          loadKbs();
        } else answer.error = describe(error instanceof TypeError ? new ApiFailure(0, "network", "") : error);
        if (error instanceof ApiFailure && error.status === 401) askForKey(t(state.key ? "key.rejected" : "key.needed"));
      }
    } finally {
      state.streaming = null;
      setBusy(false);
      saveConversations();
      updateMessage(conv, index);
    }
  }

  // Server-Sent Events from a fetch() body: "event: NAME\ndata: JSON\n\n" frames.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        let name = "message";
        const data = [];
        for (const line of frame.split(/\r?\n/)) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
      if (done) return;
    }
  }

  function setBusy(busy) {
    $("chat-send").disabled = busy;
    $("chat-stop").hidden = !busy;
    $("chat-clear").disabled = busy;
    $("chat-kb").disabled = busy;
  }

  // ------------------------------------------------------------------ views
  function showView(view) {
    state.view = view;
    for (const tab of document.querySelectorAll(".tab")) tab.setAttribute("aria-selected", String(tab.dataset.view === view));
    $("view-chat").hidden = view !== "chat";
    $("view-docs").hidden = view !== "docs";
    if (view === "docs") loadDocuments();
  }

  function renderAll() {
    renderKbs();
    renderChatKbSelect();
    renderConversations();
    renderMessages();
    renderDocuments();
  }

  // ------------------------------------------------------------------ start
  function wire() {
    $("lang-switch").addEventListener("click", () => {
      state.lang = state.lang === "zh" ? "en" : "zh";
      store.set("lang", state.lang);
      applyLanguage();
      refreshStatus();
    });
    $("key-button").addEventListener("click", () => askForKey(""));
    $("key-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing) {
        event.preventDefault();
        $("key-dialog").close("save");
      }
    });
    $("key-dialog").addEventListener("close", async () => {
      const action = $("key-dialog").returnValue;
      if (action === "save") setKey($("key-input").value.trim(), $("key-remember").checked);
      else if (action === "forget") setKey("", false);
      else return;
      await refreshStatus();
      await loadKbs();
    });
    $("kb-create").addEventListener("submit", createKb);
    $("kb-delete").addEventListener("click", deleteKb);
    $("conv-new").addEventListener("click", () => {
      if (state.streaming) return;
      newConversation();
      renderConversations();
      renderChatKbSelect();
      renderMessages();
      showView("chat");
      $("chat-input").focus();
    });
    $("chat-clear").addEventListener("click", clearConversation);
    $("chat-form").addEventListener("submit", ask);
    $("chat-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("chat-form").requestSubmit();
      }
    });
    $("chat-stop").addEventListener("click", () => state.streaming && state.streaming.controller.abort());
    $("chat-kb").addEventListener("change", () => {
      const conv = currentConversation();
      if (conv) {
        conv.kb = $("chat-kb").value || null;
        conv.kbChosen = true;
        saveConversations();
      }
    });
    for (const id of ["set-top-k", "set-threshold", "set-temperature", "set-max-tokens"]) $(id).addEventListener("change", readSettings);
    for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
    setUpDropZone();
  }

  async function start() {
    wire();
    setKey(state.key, Boolean(store.get("key", "")));
    if (!currentConversation()) newConversation();
    showSettings();
    applyLanguage();
    const reachable = await refreshStatus();
    if (!reachable) {
      askForKey(t(state.key ? "key.rejected" : "key.needed"));
      document.body.dataset.ready = "true";
      return;
    }
    await loadKbs();
    document.body.dataset.ready = "true";
  }

  start();
})();
