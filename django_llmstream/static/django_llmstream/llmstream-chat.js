// The chat widget of {% llmstream_chat %}: mounts every [data-llmstream-chat] element on the
// page (the markup comes from the template django_llmstream/chat.html, which a site may
// override) and drives it with llmstream.js. Model output only reaches the page as text
// nodes, or through renderMarkdown(), which never parses HTML.

import { Client, renderMarkdown } from "./llmstream.js";

const ROLE_LABELS = { user: "You", assistant: "Assistant", tool: "Tool", system: "System" };

const FINISH_LABELS = {
  cancelled: "Stopped",
  length: "Cut off at the length limit",
  content_filter: "Stopped by the content filter",
  tool_calls: "Asked to call tools",
};

// What a person reads first when an answer fails; the server's message follows.
const ERROR_TITLES = {
  network_error: "Could not reach the server.",
  connection_lost: "The connection was lost before the answer was complete.",
  upstream_connection: "Could not reach the model's service.",
  upstream_timeout: "The model took too long to answer.",
  upstream_rate_limited: "The model's service is busy right now.",
  upstream_overloaded: "The model's service is busy right now.",
  upstream_server_error: "The model's service had a problem.",
  upstream_auth: "The site's access to the model was refused.",
  upstream_bad_request: "The model's service refused the request.",
  interrupted: "The server stopped before the answer was complete.",
  rate_limited: "Too many requests: wait a moment.",
  csrf_failed: "Your session has expired: reload the page.",
  not_authenticated: "Log in to chat.",
};

export function formatCost(cost) {
  if (cost === null || cost === undefined || cost === "") return null;
  let text = String(cost);
  if (text.includes(".")) text = text.replace(/0+$/, "").replace(/\.$/, "");
  return `$${text}`;
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return null;
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** The line under an answer: finish reason, tokens, cost, timings (unknown numbers left out). */
export function usageSummary({ finish_reason, usage, cost, ttft_ms, duration_ms }) {
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

/** One message of the transcript, cloned from the widget's <template>. */
class MessageView {
  constructor(widget, role) {
    this.widget = widget;
    this.markdown = widget.markdown && role === "assistant";
    const article = widget.messageTemplate.content.firstElementChild.cloneNode(true);
    this.article = article;
    article.classList.add(`llmstream-message-${role}`);
    article.dataset.role = role;
    this.part("role").textContent = ROLE_LABELS[role] || role;
    this.body = this.part("body");
    if (this.markdown) this.body.classList.add("llmstream-markdown");
    this.text = "";
    this.textNode = null;
    this.cursor = null;
    this.toolCalls = new Map();
    widget.placeholder.hidden = true;
    widget.transcript.append(article);
  }

  part(name) {
    return this.article.querySelector(`[data-${name}]`) || document.createElement("div");
  }

  setText(text) {
    this.text = text || "";
    if (this.markdown) {
      this.body.replaceChildren(renderMarkdown(this.text));
    } else {
      this.textNode = document.createTextNode(this.text);
      this.body.replaceChildren(this.textNode);
    }
    this.placeCursor();
  }

  appendText(text) {
    if (!text) return;
    const follow = this.widget.nearBottom();
    if (this.markdown) {
      this.setText(this.text + text); // one render per animation frame (coalesced deltas)
    } else {
      this.text += text;
      if (!this.textNode) this.setText(this.text);
      else this.textNode.appendData(text);
    }
    if (follow) this.widget.scrollToEnd();
  }

  placeCursor() {
    if (!this.cursor) return;
    // At the end of the last text, not below a paragraph.
    let last = this.body;
    while (last.lastElementChild && !["PRE", "TABLE", "HR", "BR"].includes(last.lastElementChild.tagName)) {
      last = last.lastElementChild;
    }
    last.append(this.cursor);
  }

  startStreaming() {
    this.article.setAttribute("aria-busy", "true");
    this.article.classList.add("llmstream-streaming");
    this.cursor = document.createElement("span");
    this.cursor.className = "llmstream-cursor";
    this.cursor.setAttribute("aria-hidden", "true");
    this.placeCursor();
  }

  stopStreaming() {
    this.article.setAttribute("aria-busy", "false");
    this.article.classList.remove("llmstream-streaming");
    if (this.cursor) this.cursor.remove();
    this.cursor = null;
  }

  appendReasoning(text) {
    const box = this.part("reasoning");
    box.hidden = false;
    const body = box.querySelector("[data-reasoning-body]") || box;
    body.append(document.createTextNode(text));
  }

  appendToolCall({ index, id, name, arguments: args }) {
    const tools = this.part("tools");
    tools.hidden = false;
    let call = this.toolCalls.get(index);
    if (!call) {
      const row = document.createElement("div");
      row.className = "llmstream-tool-call";
      call = { row, name: document.createElement("strong"), args: document.createElement("code") };
      row.append("Tool call ", call.name, " ", call.args);
      tools.append(row);
      this.toolCalls.set(index, call);
    }
    if (name) call.name.textContent = name;
    if (id) call.row.title = id;
    if (args) call.args.append(document.createTextNode(args));
  }

  showMeta(text) {
    if (!text) return;
    const meta = this.part("meta");
    meta.textContent = text;
    meta.hidden = false;
  }

  showError({ type, message, retryable }, onRetry) {
    const box = this.part("error");
    box.replaceChildren();
    const title = document.createElement("strong");
    title.textContent = ERROR_TITLES[type] || "The answer could not be completed.";
    box.append(title);
    if (message && message !== title.textContent) {
      const detail = document.createElement("p");
      detail.textContent = message;
      box.append(detail);
    }
    if (retryable && onRetry) {
      const retry = document.createElement("button");
      retry.type = "button";
      retry.className = "llmstream-button";
      retry.textContent = "Try again";
      retry.addEventListener("click", onRetry);
      box.append(retry);
    }
    box.hidden = false;
    this.article.classList.add("llmstream-failed");
  }
}

/** The widget: one conversation at a time, one answer streaming at a time. */
export class ChatWidget extends EventTarget {
  constructor(root, options = {}) {
    super();
    this.root = root;
    const data = root.dataset;
    this.markdown = options.markdown ?? data.markdown !== "false";
    this.mode = options.mode || data.mode || "turns";
    const q = (name) => root.querySelector(`[data-llmstream-${name}]`);
    Object.assign(this, {
      transcript: q("transcript"),
      placeholder: q("placeholder") || document.createElement("p"),
      form: q("form"),
      prompt: q("prompt"),
      sendButton: q("send"),
      stopButton: q("stop"),
      regenerateButton: q("regenerate"),
      status: q("status"),
      title: q("title"),
      modelSelect: q("model"),
      modelLabel: q("model-label"),
      messageTemplate: q("message-template"),
    });
    this.client = new Client({
      root: options.apiRoot || data.apiRoot || "/llmstream/",
      csrfToken: options.csrfToken || data.csrfToken || null,
      storageKey: `llmstream:turn:${options.storageKey || data.storageKey || "chat"}`,
      coalesce: true,
    });
    this.conversation = null;
    this.lastPrompt = null;
    this.turn = null;
    this.defaultTitle = this.title ? this.title.textContent : "";
    this.bind();
    const initial = options.conversation || data.conversation || null;
    const saved = this.client.pending();
    if (saved && saved.conversation && (!initial || saved.conversation === initial)) {
      this.open(saved.conversation, { resume: true });
    } else if (initial) {
      this.open(initial);
    } else {
      this.setModel(null);
    }
  }

  bind() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const prompt = this.prompt.value;
      if (!prompt.trim()) {
        this.setStatus("Type a message first.", { error: true });
        this.prompt.focus();
        return;
      }
      if (this.turn) return; // one answer at a time
      this.prompt.value = "";
      this.send(prompt);
    });
    this.prompt.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter is a new line; never while an IME is composing.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.stopButton?.addEventListener("click", () => {
      this.stop();
      this.prompt.focus();
    });
    this.regenerateButton?.addEventListener("click", () => this.regenerate());
  }

  emit(name, detail) {
    const event = new CustomEvent(`llmstream:${name}`, { detail, bubbles: true });
    this.root.dispatchEvent(event);
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  setStatus(text, { error = false } = {}) {
    if (!this.status) return;
    this.status.textContent = text || "";
    this.status.classList.toggle("llmstream-status-error", error);
  }

  nearBottom() {
    const t = this.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 80;
  }

  scrollToEnd() {
    this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  setBusy(busy) {
    this.sendButton.disabled = busy;
    if (this.stopButton) this.stopButton.hidden = !busy;
    this.updateRegenerate();
  }

  updateRegenerate() {
    if (this.regenerateButton) this.regenerateButton.hidden = Boolean(this.turn) || !this.lastPrompt;
  }

  setModel(provider, model) {
    const known = Boolean(provider);
    if (this.modelSelect) {
      this.modelSelect.hidden = known;
      const label = this.root.querySelector(`label[for="${this.modelSelect.id}"]`);
      if (label) label.hidden = known;
    }
    if (this.modelLabel) {
      this.modelLabel.hidden = !known;
      this.modelLabel.textContent = known ? `${provider} · ${model}` : "";
    }
  }

  selectedModel() {
    if (!this.modelSelect || !this.modelSelect.value) return null;
    const [provider, ...rest] = this.modelSelect.value.split("|");
    return { provider, model: rest.join("|") };
  }

  setTitle(text) {
    if (this.title) this.title.textContent = text || "Untitled";
  }

  clear() {
    this.transcript.replaceChildren(this.placeholder);
    this.placeholder.hidden = false;
  }

  /** Watch `turn` into a new assistant message; resolves when the turn ends. */
  watch(turn, view, { prompt, userView } = {}) {
    this.turn = turn;
    this.setBusy(true);
    view.startStreaming();
    turn.addEventListener("resume", (e) => view.setText(e.detail.text));
    turn.addEventListener("start", (e) => {
      const { conversation, provider, model } = e.detail;
      this.setModel(provider, model);
      if (conversation !== this.conversation) {
        this.conversation = conversation;
        if (prompt) this.setTitle(prompt.split(/\s+/).join(" ").slice(0, 80));
        this.emit("conversation", { id: conversation });
      }
      this.emit("turnstart", { turn: e.detail.turn, conversation });
    });
    turn.addEventListener("delta", (e) => view.appendText(e.detail.text));
    turn.addEventListener("reasoning", (e) => view.appendReasoning(e.detail.text));
    turn.addEventListener("tool_call", (e) => view.appendToolCall(e.detail));
    turn.addEventListener("done", (e) => {
      view.showMeta(usageSummary(e.detail));
      this.setStatus(e.detail.finish_reason === "cancelled" ? "Stopped." : "Answer complete.");
    });
    turn.addEventListener("error", (e) => {
      const error = e.detail;
      if (error.refused && userView) {
        // Refused before anything started (invalid input, CSRF, quota): nothing was stored,
        // so the prompt goes back into the box and the reason is shown next to it.
        userView.article.remove();
        view.article.remove();
        if (!this.transcript.querySelector(".llmstream-message")) this.placeholder.hidden = false;
        if (!this.prompt.value) this.prompt.value = prompt;
        const title = ERROR_TITLES[error.type];
        this.setStatus(`Not sent: ${title ? `${title} ` : ""}${error.message}`, { error: true });
        return;
      }
      view.showError(error, () => this.regenerate());
      this.setStatus("The answer failed.", { error: true });
    });
    turn.finished.then(() => {
      view.stopStreaming();
      if (this.turn === turn) {
        this.turn = null;
        this.setBusy(false);
      }
      this.emit("turnend", { turn: turn.id, conversation: turn.conversation, result: turn.result });
    });
    return turn;
  }

  /** Send `prompt` as a new turn of the open conversation (or of a new one). */
  send(prompt) {
    this.setStatus("");
    const body = { prompt };
    if (this.conversation) body.conversation = this.conversation;
    else {
      const choice = this.selectedModel();
      if (choice) Object.assign(body, choice);
    }
    const userView = new MessageView(this, "user");
    userView.setText(prompt);
    const view = new MessageView(this, "assistant");
    this.scrollToEnd();
    this.lastPrompt = prompt;
    const turn = this.mode === "stream" ? this.client.stream(body) : this.client.start(body);
    return this.watch(turn, view, { prompt, userView });
  }

  /** Send the previous prompt again, as a new turn in the same conversation. */
  regenerate() {
    if (this.turn || !this.lastPrompt) return null;
    return this.send(this.lastPrompt);
  }

  stop() {
    if (this.turn) this.turn.stop();
  }

  /** Start a new conversation (the running answer, if any, is left to run on the server). */
  newChat() {
    if (this.turn) this.turn.close();
    this.client.forget();
    this.conversation = null;
    this.lastPrompt = null;
    this.setTitle(this.defaultTitle);
    this.setModel(null);
    this.clear();
    this.setStatus("");
    this.updateRegenerate();
    this.prompt.focus();
  }

  /** Show conversation `id`; a turn still running is followed live (or resumed after a reload). */
  async open(id, { resume = false } = {}) {
    if (this.turn) this.turn.close();
    this.setStatus("");
    let data;
    try {
      data = await this.client.conversation(id);
    } catch (error) {
      if (resume) this.client.forget();
      this.setStatus(`Could not load the conversation: ${error.message}`, { error: true });
      return;
    }
    this.conversation = data.id;
    this.setTitle(data.title);
    this.setModel(data.provider, data.model);
    this.clear();
    const saved = resume ? this.client.pending() : null;
    let running = null;
    this.lastPrompt = null;
    for (const message of data.messages) {
      if (message.role === "system") continue;
      const view = new MessageView(this, message.role);
      if (message.role === "user") this.lastPrompt = message.content;
      if (message.role === "assistant" && ["pending", "streaming"].includes(message.status)) {
        running = { view, message }; // still being written: watched live below
        continue;
      }
      if (message.role === "assistant" && saved && saved.turn === message.id) {
        // Finished while the page reloaded: the stored text is complete.
        this.client.forget();
      }
      view.setText(message.content);
      if (message.role === "assistant") {
        const summary = usageSummary({
          finish_reason: message.finish_reason,
          usage: { input_tokens: message.input_tokens, output_tokens: message.output_tokens },
          cost: message.cost,
        });
        if (message.status === "failed" || message.status === "interrupted") {
          view.showError({ type: message.status === "interrupted" ? "interrupted" : "", message: "" });
        }
        view.showMeta(summary);
      }
    }
    this.updateRegenerate();
    this.scrollToEnd();
    this.emit("conversation", { id: data.id, title: data.title });
    if (!running) return;
    let turn = null;
    if (saved && saved.turn === running.message.id) {
      turn = this.client.resume(); // the saved text, then the events after it
    }
    if (!turn) {
      turn = this.client.attach(running.message.id, { conversation: data.id }); // from the start
    }
    this.watch(turn, running.view);
  }
}

/** Mount the widget on `root` (an element rendered by {% llmstream_chat %}). */
export function mountChat(root, options = {}) {
  if (!root.llmstreamChat) root.llmstreamChat = new ChatWidget(root, options);
  return root.llmstreamChat;
}

for (const root of document.querySelectorAll("[data-llmstream-chat]")) {
  if (root.dataset.autoMount !== "false") mountChat(root);
}
