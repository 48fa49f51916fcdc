// The demo chat page of django-llmstream: fetch + ReadableStream + a small SSE parser,
// no dependencies. Model output is data: it only ever reaches the page as text
// (textContent, Text nodes), never as HTML.

const config = JSON.parse(document.getElementById("llmstream-config").textContent);
const api = (path) => config.apiRoot + path;

// -- Server-Sent Events ------------------------------------------------------------------

/**
 * Incremental parser for text/event-stream, following the WHATWG HTML "event stream
 * interpretation" rules: lines end at CR, LF or CRLF (also when a CRLF is split between two
 * chunks); `data` lines are joined with "\n"; an event is dispatched at a blank line, and
 * only if it has data; an unfinished event at the end of the stream is dropped.
 */
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.decoder = new TextDecoder("utf-8");
    this.buffer = "";
    this.first = true;
    this.skipLF = false; // the previous chunk ended with CR: a leading LF belongs to it
    this.data = [];
    this.eventType = "";
    this.lastEventId = "";
    this.retry = null;
  }

  /** Feed a chunk of bytes (Uint8Array). */
  push(bytes) {
    this.feedText(this.decoder.decode(bytes, { stream: true }));
  }

  /** The stream has ended: flush the decoder; a partial event is discarded. */
  end() {
    this.feedText(this.decoder.decode());
    this.buffer = "";
    this.data = [];
    this.eventType = "";
  }

  feedText(text) {
    if (!text) return;
    if (this.first) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // one leading BOM
    }
    if (this.skipLF) {
      this.skipLF = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    // The kept buffer holds no line break, so only the new text needs scanning.
    const scan = this.buffer.length;
    const buffer = this.buffer + text;
    let start = 0;
    const lineBreak = /[\r\n]/g;
    lineBreak.lastIndex = scan;
    let match;
    while ((match = lineBreak.exec(buffer)) !== null) {
      const at = match.index;
      this.processLine(buffer.slice(start, at));
      start = at + 1;
      if (buffer[at] === "\r") {
        if (at + 1 < buffer.length) {
          if (buffer[at + 1] === "\n") start += 1;
        } else {
          this.skipLF = true;
        }
      }
      lineBreak.lastIndex = start;
    }
    this.buffer = buffer.slice(start);
  }

  processLine(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line[0] === ":") return; // a comment, e.g. ": ping"
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
    }
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  dispatch() {
    const hasData = this.data.length > 0;
    const data = this.data.join("\n");
    const type = this.eventType || "message";
    this.data = [];
    this.eventType = "";
    if (!hasData) return;
    this.onEvent({ type, data, id: this.lastEventId });
  }
}

// -- small helpers ------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

const els = {
  list: $("conversation-list"),
  listEmpty: $("conversation-empty"),
  loadMore: $("load-more"),
  newChat: $("new-chat"),
  title: $("chat-title"),
  modelSelect: $("model-select"),
  modelLabel: document.querySelector('label[for="model-select"]'),
  modelText: $("chat-model"),
  transcript: $("transcript"),
  placeholder: $("placeholder"),
  form: $("prompt-form"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  status: $("status"),
};

const state = {
  conversation: null, // id of the open conversation; null for a new chat
  controller: null, // AbortController of the running stream, if any
  turn: null, // id of the running turn, known from its `start` event
  next: null, // URL of the next page of conversations
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "csrftoken") return decodeURIComponent(rest.join("="));
  }
  return "";
}

function setStatus(text) {
  els.status.textContent = text || "";
}

function nearBottom() {
  const t = els.transcript;
  return t.scrollHeight - t.scrollTop - t.clientHeight < 80;
}

function scrollToEnd() {
  els.transcript.scrollTop = els.transcript.scrollHeight;
}

/** Turn a non-2xx response into {type, message, field, retryable}. */
async function errorFromResponse(response) {
  const error = {
    type: `http_${response.status}`,
    message: response.statusText || "The request failed.",
    field: null,
    retryable: response.status === 429 || response.status >= 500,
  };
  try {
    const body = await response.json();
    if (body && body.error) {
      error.type = body.error.type || error.type;
      error.message = body.error.message || error.message;
      error.field = body.error.field || null;
    }
  } catch {
    // not JSON: keep the status line
  }
  const retryAfter = response.headers.get("Retry-After");
  if (response.status === 429 && retryAfter) {
    error.message += ` Try again in ${retryAfter} s.`;
  }
  return error;
}

/** One line for an error: its type, message, field and whether a retry may help. */
function describeError({ type, message, field, retryable }) {
  let text = `${message || "No details."}`;
  if (field) text += ` (field: ${field})`;
  if (retryable) text += " You can try again.";
  return `${text} [${type || "error"}]`;
}

function formatCost(cost) {
  if (cost === null || cost === undefined || cost === "") return null;
  let text = String(cost);
  if (text.includes(".")) text = text.replace(/0+$/, "").replace(/\.$/, "");
  return `$${text}`;
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return null;
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

const FINISH_LABELS = {
  cancelled: "Stopped",
  length: "Cut off at the length limit",
  content_filter: "Stopped by the content filter",
  tool_calls: "Asked to call tools",
};

/** Lines under an answer: finish reason, tokens, cost, timings (absent numbers skipped). */
function usageSummary({ finish_reason, usage, cost, ttft_ms, duration_ms }) {
  const parts = [];
  if (finish_reason && FINISH_LABELS[finish_reason]) parts.push(FINISH_LABELS[finish_reason]);
  const u = usage || {};
  if (u.input_tokens != null || u.output_tokens != null) {
    let tokens = `${u.input_tokens ?? "?"} in`;
    if (u.cached_input_tokens) tokens += ` (${u.cached_input_tokens} cached)`;
    tokens += ` · ${u.output_tokens ?? "?"} out`;
    if (u.reasoning_tokens) tokens += ` (${u.reasoning_tokens} reasoning)`;
    parts.push(`${tokens} tokens`);
  }
  const money = formatCost(cost);
  if (money) parts.push(money);
  const ttft = formatMs(ttft_ms);
  if (ttft) parts.push(`first token ${ttft}`);
  const duration = formatMs(duration_ms);
  if (duration) parts.push(`total ${duration}`);
  return parts.join(" · ");
}

// -- messages -----------------------------------------------------------------------------

const ROLE_LABELS = { user: "You", assistant: "Assistant", tool: "Tool", system: "System" };

/** One message in the transcript; assistant messages grow as events arrive. */
class MessageView {
  constructor(role) {
    this.article = el("article", `message message-${role}`);
    this.article.append(el("p", "message-role", ROLE_LABELS[role] || role));
    this.body = el("div", "message-body");
    this.text = document.createTextNode("");
    this.body.append(this.text);
    this.article.append(this.body);
    this.meta = el("p", "message-meta muted");
    this.meta.hidden = true;
    this.article.append(this.meta);
    this.reasoning = null;
    this.tools = null;
    this.toolCalls = new Map();
    this.cursor = null;
    els.placeholder.hidden = true;
    els.transcript.append(this.article);
  }

  setText(text) {
    this.text.data = text || "";
  }

  appendText(text) {
    const follow = nearBottom();
    this.text.appendData(text);
    if (follow) scrollToEnd();
  }

  startCursor() {
    this.cursor = el("span", "cursor");
    this.cursor.setAttribute("aria-hidden", "true");
    this.body.append(this.cursor);
  }

  stopCursor() {
    if (this.cursor) this.cursor.remove();
    this.cursor = null;
  }

  appendReasoning(text) {
    if (!this.reasoning) {
      const details = el("details", "message-reasoning");
      details.append(el("summary", null, "Reasoning"));
      this.reasoning = el("div", "reasoning-body");
      details.append(this.reasoning);
      this.article.insertBefore(details, this.body);
    }
    this.reasoning.append(document.createTextNode(text));
  }

  appendToolCall({ index, id, name, arguments: args }) {
    if (!this.tools) {
      this.tools = el("div", "message-tools");
      this.article.insertBefore(this.tools, this.meta);
    }
    let call = this.toolCalls.get(index);
    if (!call) {
      const row = el("div", "tool-call");
      call = { row, name: el("span", "tool-name"), args: el("code", "tool-args"), text: "" };
      row.append(el("span", "muted", "Tool call "), call.name, call.args);
      this.tools.append(row);
      this.toolCalls.set(index, call);
    }
    if (name) call.name.textContent = name;
    if (id) call.row.title = id;
    if (args) {
      call.text += args;
      call.args.textContent = call.text;
    }
  }

  showMeta(text) {
    if (!text) return;
    const follow = nearBottom();
    this.meta.textContent = text;
    this.meta.hidden = false;
    if (follow) scrollToEnd();
  }

  showError({ type, message, field, retryable }) {
    const follow = nearBottom();
    const box = el("div", "message-error");
    box.append(el("strong", null, "The answer failed"));
    box.append(document.createTextNode(" "));
    box.append(el("code", null, type || "error"));
    let text = message || "No details.";
    if (field) text += ` (field: ${field})`;
    if (retryable) text += " You can try again.";
    box.append(el("p", null, text));
    this.article.insertBefore(box, this.meta);
    this.article.classList.add("message-failed");
    if (follow) scrollToEnd();
  }
}

// -- streaming ----------------------------------------------------------------------------

function setStreaming(on) {
  els.send.disabled = on;
  els.stop.hidden = !on;
  els.transcript.setAttribute("aria-busy", on ? "true" : "false");
}

function setModel(provider, model) {
  const existing = Boolean(provider);
  els.modelSelect.hidden = existing;
  els.modelLabel.hidden = existing;
  els.modelText.hidden = !existing;
  els.modelText.textContent = existing ? `${provider} · ${model}` : "";
}

/**
 * Run one event stream (the POST of `stream/`, or the GET of a turn's `events/`) into an
 * assistant message view. Resolves when the stream has ended, however it ended.
 */
async function runStream(view, url, init, { onHttpError } = {}) {
  const controller = new AbortController();
  state.controller = controller;
  state.turn = null;
  setStreaming(true);
  view.startCursor();
  let terminal = false;

  const handle = ({ type, data }) => {
    if (state.controller !== controller) return;
    let payload;
    try {
      payload = JSON.parse(data);
    } catch {
      return; // not ours to show
    }
    switch (type) {
      case "start":
        state.turn = payload.turn;
        if (state.conversation !== payload.conversation) {
          state.conversation = payload.conversation;
          refreshConversations();
        }
        setModel(payload.provider, payload.model);
        break;
      case "delta":
        view.appendText(payload.text);
        break;
      case "reasoning":
        view.appendReasoning(payload.text);
        break;
      case "tool_call":
        view.appendToolCall(payload);
        break;
      case "done":
        terminal = true;
        view.showMeta(usageSummary(payload));
        break;
      case "error":
        terminal = true;
        view.showError(payload);
        break;
      default:
        break;
    }
  };

  try {
    const response = await fetch(url, {
      ...init,
      headers: { Accept: "text/event-stream", ...(init.headers || {}) },
      credentials: "same-origin",
      cache: "no-store",
      signal: controller.signal,
    });
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !type.startsWith("text/event-stream")) {
      const error = await errorFromResponse(response);
      if (onHttpError) onHttpError(error);
      else view.showError(error);
      return;
    }
    const reader = response.body.getReader();
    const parser = new SSEParser(handle);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
    parser.end();
    if (!terminal) {
      view.showError({
        type: "connection_lost",
        message: "The connection ended before the answer was complete.",
        retryable: true,
      });
    }
  } catch (err) {
    if (controller.signal.aborted) {
      if (!terminal) view.showMeta("Stopped");
    } else {
      view.showError({
        type: "network_error",
        message: "Could not reach the server. Check the connection.",
        retryable: true,
      });
      console.error(err);
    }
  } finally {
    view.stopCursor();
    if (state.controller === controller) {
      state.controller = null;
      state.turn = null;
      setStreaming(false);
      refreshConversations();
    }
  }
}

/** Stop the running turn: tell the server, and stop reading. */
function stopStreaming() {
  const controller = state.controller;
  if (!controller) return;
  if (state.turn) {
    fetch(api(`turns/${encodeURIComponent(state.turn)}/stop/`), {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      credentials: "same-origin",
      keepalive: true,
    }).catch(() => {
      // the abort below cancels a one-step stream anyway
    });
  }
  controller.abort();
}

async function sendPrompt(prompt) {
  const body = { prompt };
  if (state.conversation) {
    body.conversation = state.conversation;
  } else {
    const choice = selectedModel();
    if (choice) {
      body.provider = choice.provider;
      body.model = choice.model;
    }
  }
  const user = new MessageView("user");
  user.setText(prompt);
  const answer = new MessageView("assistant");
  scrollToEnd();
  await runStream(
    answer,
    api("stream/"),
    {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
    },
    {
      // Refused before anything started (invalid input, CSRF, quota): nothing was sent, so
      // the prompt goes back into the box and the error is shown next to it.
      onHttpError(error) {
        user.article.remove();
        answer.article.remove();
        if (!els.transcript.querySelector(".message")) els.placeholder.hidden = false;
        if (!els.prompt.value) els.prompt.value = prompt;
        setStatus(`Not sent: ${describeError(error)}`);
      },
    },
  );
}

// -- the model choice of a new chat --------------------------------------------------------

const modelChoices = [];

function buildModelSelect() {
  for (const { provider, models } of config.providers) {
    const group = document.createElement("optgroup");
    group.label = provider;
    for (const model of models) {
      const option = el("option", null, `${provider} · ${model}`);
      option.value = String(modelChoices.length);
      if (provider === config.defaultProvider && !modelChoices.some((c) => c.default)) {
        option.selected = true;
        modelChoices.push({ provider, model, default: true });
      } else {
        modelChoices.push({ provider, model });
      }
      group.append(option);
    }
    els.modelSelect.append(group);
  }
  if (!modelChoices.length) els.modelSelect.disabled = true;
}

function selectedModel() {
  return modelChoices[Number(els.modelSelect.value)] || null;
}

// -- conversations ------------------------------------------------------------------------

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function renderConversation(item) {
  const li = el("li");
  const button = el("button", "conversation");
  button.type = "button";
  button.dataset.id = item.id;
  if (item.id === state.conversation) button.setAttribute("aria-current", "true");
  button.append(el("span", "conversation-title", item.title || "Untitled"));
  const meta = el("span", "conversation-meta");
  meta.append(document.createTextNode(`${item.provider} · ${item.model} · `));
  const time = el("time", null, dateFormat.format(new Date(item.updated_at)));
  time.dateTime = item.updated_at;
  meta.append(time);
  button.append(meta);
  button.addEventListener("click", () => openConversation(item.id));
  li.append(button);
  return li;
}

async function loadConversations(url, append) {
  let response;
  try {
    response = await fetch(url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    setStatus("Could not load the conversations.");
    return;
  }
  if (!response.ok) {
    const error = await errorFromResponse(response);
    setStatus(`Could not load the conversations: ${error.message}`);
    return;
  }
  const data = await response.json();
  const items = data.results.map(renderConversation);
  const open = data.results.find((item) => item.id === state.conversation);
  if (open) els.title.textContent = open.title || "Untitled";
  if (append) els.list.append(...items);
  else els.list.replaceChildren(...items);
  state.next = data.next;
  els.loadMore.hidden = !data.next;
  els.listEmpty.hidden = els.list.children.length > 0;
}

let refreshing = null;

function refreshConversations() {
  // Coalesce bursts (start and end of a turn) into one request at a time.
  if (!refreshing) {
    refreshing = loadConversations(api("conversations/"), false).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

function markActive() {
  for (const button of els.list.querySelectorAll("button.conversation")) {
    if (button.dataset.id === state.conversation) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function clearTranscript() {
  els.transcript.replaceChildren(els.placeholder);
  els.placeholder.hidden = false;
}

function newChat() {
  stopStreaming();
  state.conversation = null;
  els.title.textContent = "New chat";
  setModel(null);
  clearTranscript();
  markActive();
  setStatus("");
  els.prompt.focus();
}

async function openConversation(id) {
  stopStreaming();
  setStatus("");
  let response;
  try {
    response = await fetch(api(`conversations/${encodeURIComponent(id)}/`), {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    setStatus("Could not load the conversation.");
    return;
  }
  if (!response.ok) {
    const error = await errorFromResponse(response);
    setStatus(`Could not load the conversation: ${error.message}`);
    return;
  }
  const data = await response.json();
  state.conversation = data.id;
  els.title.textContent = data.title || "Untitled";
  setModel(data.provider, data.model);
  clearTranscript();
  markActive();
  if (data.system_prompt) {
    const system = new MessageView("system");
    system.setText(data.system_prompt);
  }
  let running = null;
  for (const message of data.messages) {
    if (message.role === "system") continue;
    const view = new MessageView(message.role);
    if (
      message.role === "assistant" &&
      (message.status === "pending" || message.status === "streaming")
    ) {
      running = { view, message }; // still being written: watch it live below
      continue;
    }
    view.setText(message.content);
    if (message.role === "assistant") {
      const summary = usageSummary({
        finish_reason: message.finish_reason,
        usage: { input_tokens: message.input_tokens, output_tokens: message.output_tokens },
        cost: message.cost,
      });
      const status =
        message.status === "failed" || message.status === "interrupted"
          ? `Answer ${message.status}`
          : "";
      view.showMeta([status, summary].filter(Boolean).join(" · "));
    }
  }
  scrollToEnd();
  els.prompt.focus();
  if (running) {
    // Replays the turn from its first event, then follows it while it runs.
    await runStream(running.view, api(`turns/${encodeURIComponent(running.message.id)}/events/`), {
      method: "GET",
    });
  }
}

// -- wiring -------------------------------------------------------------------------------

els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = els.prompt.value;
  if (!prompt.trim()) {
    setStatus("Type a message first.");
    els.prompt.focus();
    return;
  }
  if (state.controller) return; // one answer at a time
  setStatus("");
  els.prompt.value = "";
  els.prompt.focus();
  sendPrompt(prompt);
});

els.prompt.addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter inserts a newline; never while an IME is composing.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    els.form.requestSubmit();
  }
});

els.stop.addEventListener("click", () => {
  stopStreaming();
  els.prompt.focus();
});
els.newChat.addEventListener("click", newChat);
els.loadMore.addEventListener("click", () => {
  if (state.next) loadConversations(state.next, true);
});

buildModelSelect();
setModel(null);
refreshConversations();
