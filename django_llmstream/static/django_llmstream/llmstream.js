// django-llmstream's browser client: an ES module without dependencies.
//
//   import { Client } from "/static/django_llmstream/llmstream.js";
//   const client = new Client({ root: "/llmstream/" });
//   const turn = client.start({ prompt: "Hi" }, { onDelta: (text) => out.append(text) });
//
// Model output is data: nothing here turns it into markup. renderMarkdown() builds DOM nodes
// with createElement and text nodes only, so no HTML from a model can ever execute.
// The types are in llmstream.d.ts; docs/frontends.rst explains every option.

export const VERSION = "0.1.0";

/** The event types of the protocol's event stream; `done` and `error` end a turn. */
export const EVENT_TYPES = Object.freeze(["start", "delta", "reasoning", "tool_call", "done", "error"]);
const TERMINAL = new Set(["done", "error"]);

// -- Server-Sent Events ------------------------------------------------------------------------

/**
 * Incremental text/event-stream parser following the WHATWG HTML "event stream
 * interpretation" rules (9.2.6): lines end at CR, LF or CRLF (also a CRLF split between two
 * chunks); one leading BOM is dropped; `data` lines are joined with "\n"; an event is
 * dispatched at a blank line and only if it has data; the last event id stays in effect
 * until changed; an unfinished event at the end of the stream is dropped.
 */
export class SSEParser {
  /** @param {(event: {type: string, data: string, id: string, retry: number|null}) => void} onEvent */
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

  /** Feed a chunk of bytes (a Uint8Array) or of text. */
  push(chunk) {
    this.feedText(typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true }));
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
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLF) {
      this.skipLF = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    // The kept buffer holds no line break, so only the new text needs scanning.
    const buffer = this.buffer + text;
    const lineBreak = /[\r\n]/g;
    lineBreak.lastIndex = this.buffer.length;
    let start = 0;
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
    if (field === "event") this.eventType = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.retry = Number(value);
    }
  }

  dispatch() {
    const hasData = this.data.length > 0;
    const data = this.data.join("\n");
    const type = this.eventType || "message";
    this.data = [];
    this.eventType = "";
    if (hasData) this.onEvent({ type, data, id: this.lastEventId, retry: this.retry });
  }
}

// -- helpers -------------------------------------------------------------------------------------

/** The value of Django's CSRF cookie (`csrftoken` unless CSRF_COOKIE_NAME says otherwise). */
export function getCsrfToken(name = "csrftoken") {
  if (typeof document === "undefined") return "";
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

/** An error of the JSON error format, or of the client itself (network, lost connection). */
export class LLMStreamError extends Error {
  constructor({ type, message, field = null, retryable = false, status = null, retryAfter = null }) {
    super(message);
    this.name = "LLMStreamError";
    this.type = type;
    this.field = field;
    this.retryable = retryable;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** `{type, message, field, retryable, status, retryAfter}` from a non-2xx response. */
export async function errorFromResponse(response) {
  const error = {
    type: `http_${response.status}`,
    message: response.statusText || "The request failed.",
    field: null,
    retryable: response.status === 429 || response.status >= 500,
    status: response.status,
    retryAfter: null,
  };
  try {
    const body = await response.json();
    if (body && body.error) {
      error.type = body.error.type || error.type;
      error.message = body.error.message || error.message;
      error.field = body.error.field || null;
    }
  } catch {
    // not JSON (a proxy's error page): keep the status line
  }
  const retryAfter = response.headers.get("Retry-After");
  if (retryAfter && /^\d+$/.test(retryAfter)) error.retryAfter = Number(retryAfter);
  return error;
}

function joinUrl(root, path) {
  return root.replace(/\/?$/, "/") + path.replace(/^\//, "");
}

function withLastEventId(url, lastEventId) {
  if (!lastEventId) return url;
  const sep = url.includes("?") ? "&" : "?";
  return `${url}${sep}last_event_id=${encodeURIComponent(lastEventId)}`;
}

function defaultStorage() {
  try {
    return globalThis.sessionStorage || null;
  } catch {
    return null; // storage disabled (privacy settings, sandboxed iframe)
  }
}

const EMPTY_USAGE = Object.freeze({
  input_tokens: null,
  output_tokens: null,
  cached_input_tokens: null,
  reasoning_tokens: null,
});

// -- a turn ----------------------------------------------------------------------------------------

const HANDLERS = {
  start: "onStart",
  delta: "onDelta",
  reasoning: "onReasoning",
  tool_call: "onToolCall",
  done: "onDone",
  error: "onError",
  resume: "onResume",
  status: "onStatus",
};

/**
 * One assistant turn being watched. An EventTarget: listen for "start", "delta", "reasoning",
 * "tool_call", "done", "error" (CustomEvent, the data in `detail`), "resume" and "status", or
 * pass `onStart` … `onStatus` callbacks. Exactly one of "done" and "error" ends every turn.
 */
export class Turn extends EventTarget {
  constructor(client, options = {}) {
    super();
    this.client = client;
    this.options = { ...client.options, ...options };
    this.id = null; // the turn id, once known
    this.conversation = null;
    this.eventsUrl = null;
    this.stopUrl = null;
    this.lastEventId = "";
    this.text = "";
    this.reasoning = "";
    this.toolCalls = [];
    this.status = "idle"; // connecting, streaming, reconnecting, stopping, done, error
    this.result = null; // the terminal event: {type: "done"|"error", data}
    this.finished = new Promise((resolve) => {
      this._resolve = resolve;
    });
    this._source = null;
    this._abort = null;
    this._retries = 0;
    this._retryTimer = null;
    this._stopTimer = null;
    this._pending = { delta: "", reasoning: "", id: "" };
    this._flushHandle = null;
    this._saveTimer = null;
    this._closed = false;
    this._stopRequested = false;
  }

  /** True once the turn has ended (done or error) or was closed. */
  get ended() {
    return this.result !== null || this._closed;
  }

  // -- emitting ------------------------------------------------------------------------------

  _emit(type, detail) {
    const handler = this.options[HANDLERS[type]];
    if (typeof handler === "function") {
      try {
        handler(detail, this);
      } catch (err) {
        console.error(err); // a failing callback must not break the stream
      }
    }
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this._emit("status", status);
  }

  /** Handle one event of the turn's stream, whatever transport brought it. */
  _handle(type, data, id) {
    if (this.result !== null || this._closed) return;
    if (id) this.lastEventId = id;
    if (!TERMINAL.has(type) && this.status !== "stopping") this._setStatus("streaming");
    if (type === "delta" || type === "reasoning") {
      const text = data.text || "";
      if (type === "delta") this.text += text;
      else this.reasoning += text;
      if (this.options.coalesce) {
        if (this._pending.delta && type === "reasoning") this._flush();
        if (this._pending.reasoning && type === "delta") this._flush();
        this._pending[type] += text;
        this._pending.id = id;
        this._scheduleFlush();
      } else {
        this._emit(type, { text, id });
      }
      this._scheduleSave();
      return;
    }
    this._flush(); // keep the order: text first, then whatever comes next
    if (type === "start") {
      this.id = data.turn || this.id;
      this.conversation = data.conversation || this.conversation;
      this._fillUrls();
      this._save();
      this._emit("start", data);
      if (this._stopRequested) this._sendStop();
    } else if (type === "tool_call") {
      const call = (this.toolCalls[data.index] ||= { id: null, name: null, arguments: "" });
      if (data.id) call.id = data.id;
      if (data.name) call.name = data.name;
      call.arguments += data.arguments || "";
      this._scheduleSave();
      this._emit("tool_call", data);
    } else if (TERMINAL.has(type)) {
      this._finish(type, data);
    }
  }

  _finish(type, data) {
    this._flush();
    this.result = { type, data };
    this._setStatus(type);
    this._teardown();
    this._forget();
    this._emit(type, data);
    this._resolve(this.result);
  }

  _fail(error) {
    if (this.result !== null || this._closed) return;
    this._finish("error", {
      type: error.type,
      message: error.message,
      retryable: Boolean(error.retryable),
      field: error.field ?? null,
      status: error.status ?? null,
      retryAfter: error.retryAfter ?? null,
      refused: Boolean(error.refused),
    });
  }

  // -- coalescing: one delta per animation frame -------------------------------------------------

  _scheduleFlush() {
    if (this._flushHandle !== null) return;
    const visible = typeof document === "undefined" || document.visibilityState !== "hidden";
    if (visible && typeof requestAnimationFrame === "function") {
      this._flushHandle = { raf: requestAnimationFrame(() => this._flush()) };
    } else {
      this._flushHandle = { timer: setTimeout(() => this._flush(), 50) };
    }
  }

  _flush() {
    if (this._flushHandle !== null) {
      if (this._flushHandle.raf !== undefined) cancelAnimationFrame(this._flushHandle.raf);
      else clearTimeout(this._flushHandle.timer);
      this._flushHandle = null;
    }
    const { delta, reasoning, id } = this._pending;
    this._pending = { delta: "", reasoning: "", id: "" };
    if (reasoning) this._emit("reasoning", { text: reasoning, id });
    if (delta) this._emit("delta", { text: delta, id });
  }

  // -- remembering the turn across reloads (sessionStorage) -----------------------------------

  _fillUrls() {
    if (!this.id) return;
    const base = joinUrl(this.client.root, `turns/${encodeURIComponent(this.id)}/`);
    this.eventsUrl ||= `${base}events/`;
    this.stopUrl ||= `${base}stop/`;
  }

  _record() {
    return {
      turn: this.id,
      conversation: this.conversation,
      eventsUrl: this.eventsUrl,
      stopUrl: this.stopUrl,
      lastEventId: this.lastEventId,
      text: this.text,
      reasoning: this.reasoning,
      toolCalls: this.toolCalls,
    };
  }

  _save() {
    if (this._saveTimer !== null) {
      clearTimeout(this._saveTimer);
      this._saveTimer = null;
    }
    if (!this.options.resume || !this.id || this.ended) return;
    this.client._store(this._record());
  }

  _scheduleSave() {
    // Text and lastEventId are saved together, so a reload resumes exactly where the saved
    // text ends; pagehide saves the very latest (see Client).
    if (!this.options.resume || this._saveTimer !== null) return;
    this._saveTimer = setTimeout(() => this._save(), this.options.saveInterval);
  }

  _forget() {
    if (this._saveTimer !== null) clearTimeout(this._saveTimer);
    this._saveTimer = null;
    const saved = this.client.pending();
    if (saved && saved.turn === this.id) this.client._store(null);
    this.client._turns.delete(this);
  }

  // -- transports ---------------------------------------------------------------------------------

  /** Watch the turn's `events/` with EventSource, from `lastEventId` on. */
  _listen() {
    if (this.ended) return;
    this._teardownSource();
    this._setStatus(this._retries ? "reconnecting" : "connecting");
    const source = new EventSource(withLastEventId(this.eventsUrl, this.lastEventId), {
      withCredentials: Boolean(this.options.withCredentials),
    });
    this._source = source;
    const onEvent = (event) => {
      // Our "error" event is a MessageEvent with data; EventSource's own connection errors are
      // plain Events without it.
      if (typeof event.data !== "string") return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      this._retries = 0;
      this._handle(event.type, data, event.lastEventId);
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, onEvent);
    source.addEventListener("open", () => {
      if (this.status === "reconnecting" || this.status === "connecting") {
        this._setStatus("streaming");
      }
    });
    source.addEventListener("error", (event) => {
      if (typeof event.data === "string" || this.ended || this._source !== source) return;
      if (source.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself, sending Last-Event-ID.
        this._setStatus("reconnecting");
        return;
      }
      // CLOSED: the browser gave up (a 204, a 4xx or 5xx, or not an event stream). We have no
      // terminal event, so the turn is not finished for us: try again a few times from the
      // last id we have.
      source.close();
      this._reconnectLater();
    });
  }

  _reconnectLater() {
    if (this.ended) return;
    if (this._retries >= this.options.maxRetries) {
      this._fail({
        type: "connection_lost",
        message: "The connection to the server was lost before the answer was complete.",
        retryable: true,
      });
      return;
    }
    const delay = Math.min(this.options.retryDelay * 2 ** this._retries, 30000);
    this._retries += 1;
    this._setStatus("reconnecting");
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._listen();
    }, delay);
  }

  /** Read a `POST stream/` response with fetch; after a drop, resume with EventSource. */
  async _fetchStream(url, init) {
    const controller = new AbortController();
    this._abort = controller;
    this._setStatus("connecting");
    let response;
    try {
      response = await this.client.fetch(url, { ...init, signal: controller.signal });
    } catch (err) {
      if (this.ended) return;
      this._fail({
        type: "network_error",
        message: "Could not reach the server. Check the connection.",
        retryable: true,
        refused: true,
      });
      return;
    }
    const contentType = response.headers.get("Content-Type") || "";
    if (!response.ok || !contentType.startsWith("text/event-stream")) {
      const error = await errorFromResponse(response);
      this._fail({ ...error, refused: true });
      return;
    }
    const parser = new SSEParser(({ type, data, id }) => {
      let payload;
      try {
        payload = JSON.parse(data);
      } catch {
        return;
      }
      if (EVENT_TYPES.includes(type)) this._handle(type, payload, id);
    });
    try {
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
        if (this.ended) {
          controller.abort();
          return;
        }
      }
      parser.end();
    } catch {
      // a cut connection or our own abort: handled below
    }
    if (this._abort === controller) this._abort = null;
    if (this.ended) return;
    if (this.id) {
      this._listen(); // resume from the last event we have
    } else {
      this._fail({
        type: "connection_lost",
        message: "The connection ended before the answer started.",
        retryable: true,
      });
    }
  }

  _teardownSource() {
    if (this._source) {
      this._source.close();
      this._source = null;
    }
  }

  _teardown() {
    this._teardownSource();
    if (this._abort) {
      this._abort.abort();
      this._abort = null;
    }
    if (this._retryTimer !== null) clearTimeout(this._retryTimer);
    if (this._stopTimer !== null) clearTimeout(this._stopTimer);
    this._retryTimer = null;
    this._stopTimer = null;
  }

  // -- public ----------------------------------------------------------------------------------------

  /**
   * Stop the generation: POST the stop endpoint, then wait for the turn's `done` event
   * (finish_reason "cancelled", with the usage so far) for up to `stopTimeout` ms before
   * closing the connection (a fetch stream is aborted, which also cancels a `stream/` turn).
   * Called before the turn id is known, it stops the turn as soon as it is.
   */
  stop() {
    if (this.ended || this.status === "stopping") return this.finished;
    this._setStatus("stopping");
    if (this.id) this._sendStop();
    else this._stopRequested = true;
    return this.finished;
  }

  _sendStop() {
    this._stopRequested = false;
    this.client
      .fetch(this.stopUrl, {
        method: "POST",
        headers: { "X-CSRFToken": this.client.csrfToken(), Accept: "application/json" },
        credentials: "same-origin",
        keepalive: true,
      })
      .catch(() => {
        // unreachable: the abort below still ends a stream/ turn
      });
    this._stopTimer = setTimeout(() => {
      this._stopTimer = null;
      if (this.ended) return;
      if (this._abort) this._abort.abort();
      this._finish("done", {
        finish_reason: "cancelled",
        usage: { ...EMPTY_USAGE },
        cost: null,
        ttft_ms: null,
        duration_ms: null,
        local: true, // the server did not confirm in time
      });
    }, this.options.stopTimeout);
  }

  /** Stop watching without stopping the generation (it runs on while anyone watches). */
  close() {
    if (this.ended) return;
    this._flush();
    this._closed = true;
    this._teardown();
    this._forget();
    this._resolve({ type: "closed", data: null });
  }
}

// -- the client --------------------------------------------------------------------------------------

const DEFAULTS = {
  root: "/llmstream/",
  csrfToken: null, // a string, a function returning one, or null for the csrftoken cookie
  storageKey: "llmstream:turn",
  resume: true, // remember the running turn in sessionStorage to resume after a reload
  coalesce: false, // one delta/reasoning callback per animation frame
  maxRetries: 5, // reconnections of our own after EventSource gave up
  retryDelay: 1000, // ms before the first of them, doubled each time
  stopTimeout: 5000, // ms stop() waits for the server's `done`
  saveInterval: 250, // ms between sessionStorage saves of a running turn
  withCredentials: false,
};

/**
 * The entry point: `new Client({root: "/llmstream/"})`, then `start()` (POST turns/ and
 * EventSource), `stream()` (the one-step POST stream/ read with fetch), `attach()` (watch a
 * turn by id) or `resume()` (the turn this tab was watching before a reload).
 */
export class Client {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.root = this.options.root;
    this.storage = "storage" in options ? options.storage : defaultStorage();
    this.fetch = options.fetch || ((...args) => globalThis.fetch(...args));
    this._turns = new Set();
    if (typeof addEventListener === "function") {
      // Save the newest text and event id when the page goes away (reload, navigation).
      this._onPageHide = () => {
        for (const turn of this._turns) turn._save();
      };
      addEventListener("pagehide", this._onPageHide);
    }
  }

  url(path) {
    return joinUrl(this.root, path);
  }

  csrfToken() {
    const token = this.options.csrfToken;
    if (typeof token === "function") return token();
    return token || getCsrfToken();
  }

  _post(path, body) {
    return {
      url: this.url(path),
      init: {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: path === "stream/" ? "text/event-stream" : "application/json",
          "X-CSRFToken": this.csrfToken(),
        },
        body: JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      },
    };
  }

  _track(turn) {
    this._turns.add(turn);
    return turn;
  }

  /**
   * Start a turn with `POST turns/` and watch it with EventSource. `body` is the protocol's
   * request body (`prompt`, `conversation`, `provider`, `model`, `system`, `params`).
   * Returns the Turn at once; a refused request ends it with an "error" whose `refused` is true.
   */
  start(body, options = {}) {
    const turn = this._track(new Turn(this, options));
    const { url, init } = this._post("turns/", body);
    turn._setStatus("connecting");
    (async () => {
      let response;
      try {
        response = await this.fetch(url, init);
      } catch {
        turn._fail({
          type: "network_error",
          message: "Could not reach the server. Check the connection.",
          retryable: true,
          refused: true,
        });
        return;
      }
      if (!response.ok) {
        turn._fail({ ...(await errorFromResponse(response)), refused: true });
        return;
      }
      const created = await response.json();
      if (turn.ended) return;
      turn.id = created.turn;
      turn.conversation = created.conversation;
      turn.eventsUrl = created.events_url;
      turn.stopUrl = created.stop_url;
      turn._save();
      turn._listen();
      if (turn._stopRequested) turn._sendStop();
    })();
    return turn;
  }

  /** Start a turn with the one-step `POST stream/`, read with fetch. */
  stream(body, options = {}) {
    const turn = this._track(new Turn(this, options));
    const { url, init } = this._post("stream/", body);
    turn._fetchStream(url, init);
    return turn;
  }

  /**
   * Watch a turn by id (another tab's, or one listed by the conversation endpoint) from
   * `lastEventId` on (0, the default, replays it from its first event). `text` and
   * `reasoning` are what the caller already shows up to that id.
   */
  attach(turnId, { lastEventId = "", conversation = null, text = "", reasoning = "", ...options } = {}) {
    const turn = this._track(new Turn(this, options));
    turn.id = turnId;
    turn.conversation = conversation;
    turn.lastEventId = lastEventId ? String(lastEventId) : "";
    turn.text = text;
    turn.reasoning = reasoning;
    turn._fillUrls();
    queueMicrotask(() => turn._listen()); // after the caller has added its listeners
    return turn;
  }

  /** The turn this tab was watching when the page went away, as saved, or null. */
  pending() {
    if (!this.storage) return null;
    try {
      const raw = this.storage.getItem(this.options.storageKey);
      const saved = raw ? JSON.parse(raw) : null;
      return saved && saved.turn ? saved : null;
    } catch {
      return null;
    }
  }

  /** Forget the saved turn (the user moved on). */
  forget() {
    this._store(null);
  }

  _store(record) {
    if (!this.storage) return;
    try {
      if (record) this.storage.setItem(this.options.storageKey, JSON.stringify(record));
      else this.storage.removeItem(this.options.storageKey);
    } catch {
      // full or disabled: resuming after a reload is a convenience
    }
  }

  /**
   * Resume the saved turn after a reload: emits "resume" with the saved `{turn,
   * conversation, text, reasoning, toolCalls, lastEventId}` (show that text), then the
   * events after `lastEventId` — no duplicate, no gap. A turn that finished meanwhile sends
   * the rest of its text and its terminal event. Returns null when nothing was saved.
   */
  resume(options = {}) {
    const saved = this.pending();
    if (!saved) return null;
    const turn = this._track(new Turn(this, options));
    Object.assign(turn, {
      id: saved.turn,
      conversation: saved.conversation,
      eventsUrl: saved.eventsUrl,
      stopUrl: saved.stopUrl,
      lastEventId: saved.lastEventId || "",
      text: saved.text || "",
      reasoning: saved.reasoning || "",
      toolCalls: saved.toolCalls || [],
    });
    turn._fillUrls();
    queueMicrotask(() => {
      turn._emit("resume", { ...saved });
      turn._listen();
    });
    return turn;
  }

  /** `GET conversations/` (a page of them). */
  async conversations(url = this.url("conversations/")) {
    return this._getJson(url);
  }

  /** `GET conversations/<id>/`. */
  async conversation(id) {
    return this._getJson(this.url(`conversations/${encodeURIComponent(id)}/`));
  }

  async _getJson(url) {
    let response;
    try {
      response = await this.fetch(url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch {
      throw new LLMStreamError({
        type: "network_error",
        message: "Could not reach the server. Check the connection.",
        retryable: true,
      });
    }
    if (!response.ok) throw new LLMStreamError(await errorFromResponse(response));
    return response.json();
  }
}

// -- structured reading: lines, sentences, JSON values ----------------------------------------------
//
// The same splitters as django_llmstream.structured (tested on the same cases): push(text)
// returns the units that text completes, end() those the end of the stream completes.

/** Complete lines (LF, CRLF or CR), without the line break; the last one at the end. */
export class LineSplitter {
  constructor() {
    this.buffer = "";
    this.skipLF = false;
  }

  push(text) {
    if (this.skipLF && text) {
      this.skipLF = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    const buffer = this.buffer + text;
    const out = [];
    const lineBreak = /[\r\n]/g;
    lineBreak.lastIndex = this.buffer.length;
    let start = 0;
    let match;
    while ((match = lineBreak.exec(buffer)) !== null) {
      const at = match.index;
      out.push(buffer.slice(start, at));
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
    return out;
  }

  end() {
    const rest = this.buffer;
    this.buffer = "";
    return rest ? [rest] : [];
  }
}

const SENTENCE_ENDS = new Set([".", "!", "?", "…", "。", "！", "？"]);
const CJK_ENDS = new Set(["。", "！", "？"]);
const CLOSERS = new Set(["\"", "'", "”", "’", "»", ")", "]", "}"]);

/**
 * Sentences: ended by . ! ? … (or 。！？) with any closing quotes or brackets, followed by
 * whitespace, or by a line break; trimmed, empty ones skipped. A rule, not a language model.
 */
export class SentenceSplitter {
  constructor() {
    this.buffer = "";
    this.scanned = 0;
  }

  push(text) {
    const buffer = this.buffer + text;
    const out = [];
    const emit = (sentence) => {
      const trimmed = sentence.trim();
      if (trimmed) out.push(trimmed);
    };
    let start = 0;
    let i = this.scanned;
    const length = buffer.length;
    while (i < length) {
      const c = buffer[i];
      if (c === "\n" || c === "\r") {
        emit(buffer.slice(start, i));
        start = i + 1;
      } else if (SENTENCE_ENDS.has(c)) {
        let end = i + 1;
        while (end < length && (SENTENCE_ENDS.has(buffer[end]) || CLOSERS.has(buffer[end]))) end += 1;
        if (end === length) break; // the next piece tells whether whitespace follows
        if (/\s/.test(buffer[end]) || CJK_ENDS.has(c)) {
          emit(buffer.slice(start, end));
          start = end;
        }
        i = end;
        continue;
      }
      i += 1;
    }
    this.buffer = buffer.slice(start);
    this.scanned = Math.min(i, length) - start;
    return out;
  }

  end() {
    const rest = this.buffer.trim();
    this.buffer = "";
    this.scanned = 0;
    return rest ? [rest] : [];
  }
}

/**
 * Top-level JSON values as they complete: the elements of a top-level array one by one (an
 * object or array element at its closing bracket, a scalar at the "," or "]" after it), a
 * top-level object whole (so NDJSON gives one object per line). Anything between values that
 * does not open an object or array is skipped (prose, code fences, commas). Invalid JSON
 * throws a SyntaxError, and so does end() inside a value.
 */
export class JSONValueSplitter {
  constructor() {
    this.value = "";
    this.depth = 0;
    this.unpack = false;
    this.afterElement = false;
    this.inString = false;
    this.escape = false;
    this.position = 0;
  }

  push(text) {
    const out = [];
    for (const c of text) {
      this.step(c, out);
      this.position += 1;
    }
    return out;
  }

  step(c, out) {
    if (this.inString) {
      this.value += c;
      if (this.escape) this.escape = false;
      else if (c === "\\") this.escape = true;
      else if (c === '"') this.inString = false;
      return;
    }
    if (this.depth === 0) {
      if (c === "[") {
        this.depth = 1;
        this.unpack = true;
        this.afterElement = false;
        this.value = "";
      } else if (c === "{") {
        this.depth = 1;
        this.unpack = false;
        this.value = c;
      }
      return; // anything else between values is skipped
    }
    if (this.unpack && this.depth === 1) {
      if (c === "," || c === "]") {
        if (this.afterElement) this.afterElement = false;
        else if (this.value.trim()) out.push(this.decode());
        this.value = "";
        if (c === "]") {
          this.depth = 0;
          this.unpack = false;
        }
        return;
      }
      if (this.afterElement) {
        if (/\s/.test(c)) return;
        throw new SyntaxError(`Expected ',' or ']' after an array element (at character ${this.position})`);
      }
      if (!this.value && /\s/.test(c)) return;
    }
    this.value += c;
    if (c === '"') this.inString = true;
    else if (c === "[" || c === "{") this.depth += 1;
    else if (c === "]" || c === "}") {
      this.depth -= 1;
      if (this.depth === 0) out.push(this.decode());
      else if (this.unpack && this.depth === 1) {
        out.push(this.decode());
        this.afterElement = true;
      }
    }
  }

  decode() {
    const text = this.value.trim();
    this.value = "";
    return JSON.parse(text);
  }

  end() {
    if (this.depth || this.inString) {
      throw new SyntaxError(`The stream ended inside a JSON value (at character ${this.position})`);
    }
    return [];
  }
}

/** The text of a Turn (its deltas from now on) or of an AsyncIterable of strings. */
async function* textPieces(source) {
  if (!(source instanceof EventTarget)) {
    for await (const piece of source) yield piece;
    return;
  }
  // Listen at once (not at the first next()), so no delta is missed.
  const queue = [];
  let wake = null;
  const push = (item) => {
    queue.push(item);
    if (wake) wake();
  };
  const onDelta = (event) => push({ text: event.detail.text });
  const onDone = () => push({ end: true });
  const onError = (event) => push({ error: event.detail });
  source.addEventListener("delta", onDelta);
  source.addEventListener("done", onDone);
  source.addEventListener("error", onError);
  try {
    if (source.result) {
      if (source.result.type === "error") throw new LLMStreamError(source.result.data);
      return;
    }
    for (;;) {
      if (!queue.length) await new Promise((resolve) => (wake = resolve));
      wake = null;
      const item = queue.shift();
      if (item.end) return;
      if (item.error) throw new LLMStreamError(item.error);
      yield item.text;
    }
  } finally {
    source.removeEventListener("delta", onDelta);
    source.removeEventListener("done", onDone);
    source.removeEventListener("error", onError);
  }
}

function splitWith(splitter, source) {
  const pieces = textPieces(source);
  // Started now, so a Turn's listeners are in place before this returns.
  const first = pieces.next();
  return (async function* split() {
    let step = await first;
    while (!step.done) {
      yield* splitter.push(step.value);
      step = await pieces.next();
    }
    yield* splitter.end();
  })();
}

/**
 * The complete lines of a Turn's answer (from now on) or of an AsyncIterable of strings:
 * `for await (const line of lines(turn)) …`. A turn that ends with `error` throws an
 * LLMStreamError after the lines that arrived before it.
 */
export function lines(source) {
  return splitWith(new LineSplitter(), source);
}

/** The sentences of a Turn's answer or of an AsyncIterable of strings (see SentenceSplitter). */
export function sentences(source) {
  return splitWith(new SentenceSplitter(), source);
}

/**
 * The top-level JSON values of a Turn's answer or of an AsyncIterable of strings, each as
 * soon as it is complete: `for await (const item of jsonValues(turn)) list.append(row(item))`.
 */
export function jsonValues(source) {
  return splitWith(new JSONValueSplitter(), source);
}

// -- safe Markdown -------------------------------------------------------------------------------------

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

/** The URL if it is absolute http(s) or mailto, else null (no javascript:, data:, relative …). */
export function safeUrl(raw) {
  try {
    const url = new URL(raw.trim());
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function node(tag, className) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  return element;
}

function link(href, parent, label) {
  const a = node("a");
  a.href = href;
  a.rel = "nofollow noopener noreferrer";
  a.target = "_blank";
  if (label === undefined) a.textContent = href;
  else renderInline(label, a);
  parent.append(a);
}

const PUNCT = /[!-/:-@[-`{-~]/;

/** Find the end of an emphasis span opened at `from` by `marker`, or -1. */
function closing(text, marker, from) {
  let at = text.indexOf(marker, from);
  while (at !== -1) {
    const before = text[at - 1];
    if (at > from && before !== " " && before !== "\n" && before !== "\\") {
      if (marker === "_" || marker === "__") {
        const after = text[at + marker.length];
        if (after && /[\p{L}\p{N}]/u.test(after)) {
          at = text.indexOf(marker, at + 1);
          continue;
        }
      }
      if (marker.length === 1 && text[at + 1] === marker) {
        at = text.indexOf(marker, at + 2);
        continue;
      }
      return at;
    }
    at = text.indexOf(marker, at + 1);
  }
  return -1;
}

/** Find the `]` matching the `[` at `from`, or -1. */
function closingBracket(text, from) {
  let depth = 0;
  for (let i = from; i < text.length; i += 1) {
    const c = text[i];
    if (c === "\\") i += 1;
    else if (c === "[") depth += 1;
    else if (c === "]" && --depth === 0) return i;
    else if (c === "\n" && text[i + 1] === "\n") return -1;
  }
  return -1;
}

/** Inline Markdown into `parent`: code, links, autolinks, bold, italic, strikethrough, breaks. */
function renderInline(text, parent) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const rest = text.slice(i);
    if (c === "\\" && i + 1 < text.length && PUNCT.test(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\n") {
      flush();
      parent.append(node("br"));
      i += 1;
      continue;
    }
    if (c === "`") {
      const run = /^`+/.exec(rest)[0];
      const end = text.indexOf(run, i + run.length);
      if (end !== -1) {
        flush();
        const code = node("code");
        let content = text.slice(i + run.length, end).replace(/\n/g, " ");
        if (/^ .* $/.test(content) && content.trim()) content = content.slice(1, -1);
        code.textContent = content;
        parent.append(code);
        i = end + run.length;
        continue;
      }
      buffer += run;
      i += run.length;
      continue;
    }
    if (c === "*" || c === "_" || c === "~") {
      const double = text[i + 1] === c;
      const marker = double ? c + c : c;
      const leftOk =
        c !== "_" || i === 0 || !/[\p{L}\p{N}]/u.test(text[i - 1]); // snake_case stays text
      const next = text[i + marker.length];
      if ((c !== "~" || double) && leftOk && next && next !== " " && next !== "\n") {
        const end = closing(text, marker, i + marker.length);
        if (end !== -1) {
          flush();
          const tag = c === "~" ? "del" : double ? "strong" : "em";
          const element = node(tag);
          renderInline(text.slice(i + marker.length, end), element);
          parent.append(element);
          i = end + marker.length;
          continue;
        }
      }
      buffer += marker;
      i += marker.length;
      continue;
    }
    if (c === "[" || (c === "!" && text[i + 1] === "[")) {
      const open = c === "!" ? i + 1 : i;
      const close = closingBracket(text, open);
      if (close !== -1 && text[close + 1] === "(") {
        const target = /^\(\s*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?(?:\s+"[^"]*")?\s*\)/.exec(
          text.slice(close + 1),
        );
        if (target) {
          const label = text.slice(open + 1, close);
          const href = safeUrl(target[1]);
          flush();
          // Images are shown as links: loading them would let a model make the browser
          // fetch any URL (a tracking pixel with the conversation in its query).
          if (href) link(href, parent, label || target[1]);
          else renderInline(label, parent);
          i = close + 1 + target[0].length;
          continue;
        }
      }
    }
    if (c === "<") {
      const auto = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/.exec(rest);
      if (auto && safeUrl(auto[1])) {
        flush();
        link(safeUrl(auto[1]), parent);
        i += auto[0].length;
        continue;
      }
    }
    if ((c === "h" || c === "w") && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const bare = /^(?:https?:\/\/|www\.)[^\s<]+/.exec(rest);
      if (bare) {
        let url = bare[0].replace(/[.,:;!?"')\]*_~]+$/, "");
        const href = safeUrl(url.startsWith("www.") ? `https://${url}` : url);
        if (href) {
          flush();
          const a = node("a");
          a.href = href;
          a.rel = "nofollow noopener noreferrer";
          a.target = "_blank";
          a.textContent = url;
          parent.append(a);
          i += url.length;
          continue;
        }
      }
    }
    buffer += c;
    i += 1;
  }
  flush();
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const BULLET = /^( {0,3})([-*+])[ \t]+(.*)$/;
const ORDERED = /^( {0,3})(\d{1,9})([.)])[ \t]+(.*)$/;
const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function startsBlock(line, next) {
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    BULLET.test(line) ||
    ORDERED.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_RULE.test(next) && next.includes("-"))
  );
}

/** Block Markdown into `parent`. */
function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const marker = fence[1];
      const body = [];
      i += 1;
      while (i < lines.length) {
        const close = lines[i].trim();
        if (close.startsWith(marker[0].repeat(marker.length)) && /^(`+|~+)$/.test(close)) break;
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or the end: an unclosed fence runs to the end, as it streams)
      const pre = node("pre");
      const code = node("code");
      if (fence[2]) {
        code.className = `language-${fence[2].replace(/[^\w+#.-]/g, "")}`;
        code.dataset.language = fence[2];
      }
      code.textContent = body.join("\n");
      pre.append(code);
      parent.append(pre);
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const h = node(`h${heading[1].length}`);
      renderInline(heading[2] || "", h);
      parent.append(h);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      parent.append(node("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && lines[i].trim() && QUOTE.test(lines[i])) {
        inner.push(QUOTE.exec(lines[i])[1]);
        i += 1;
      }
      const quote = node("blockquote");
      renderBlocks(inner, quote);
      parent.append(quote);
      continue;
    }
    const bullet = BULLET.exec(line);
    const ordered = ORDERED.exec(line);
    if (bullet || ordered) {
      const list = node(bullet ? "ul" : "ol");
      if (ordered && ordered[2] !== "1") list.start = Number(ordered[2]);
      const itemPattern = bullet ? BULLET : ORDERED;
      let loose = false;
      const items = [];
      while (i < lines.length) {
        const match = itemPattern.exec(lines[i]);
        if (!match) break;
        const indent = match[1].length;
        const content = [bullet ? match[3] : match[4]];
        const width = match[0].length - content[0].length;
        i += 1;
        // Continuation: indented lines (nested lists, more paragraphs), or lazy text lines.
        while (i < lines.length) {
          const current = lines[i];
          if (!current.trim()) {
            const following = lines[i + 1];
            if (following !== undefined && /^\s+\S/.test(following) && following.search(/\S/) > indent) {
              content.push("");
              loose = true;
              i += 1;
              continue;
            }
            break;
          }
          const leading = current.search(/\S/);
          if (leading > indent && leading >= Math.min(width, indent + 2)) {
            content.push(current.slice(Math.min(leading, width)));
            i += 1;
            continue;
          }
          if (itemPattern.test(current) || startsBlock(current, lines[i + 1])) break;
          content.push(current.trim()); // a lazy continuation line
          i += 1;
        }
        items.push(content);
        if (i < lines.length && !lines[i].trim() && itemPattern.test(lines[i + 1] || "")) {
          loose = true;
          i += 1;
        }
      }
      for (const content of items) {
        const li = node("li");
        const hasBlocks = content.some((l, n) => n > 0 && (startsBlock(l, content[n + 1]) || !l.trim()));
        if (!loose && !hasBlocks) renderInline(content.join("\n"), li);
        else if (!loose) {
          // A tight item with a nested list: its first lines inline, the rest as blocks.
          let split = content.findIndex((l, n) => n > 0 && startsBlock(l, content[n + 1]));
          if (split === -1) split = content.length;
          renderInline(content.slice(0, split).join("\n"), li);
          renderBlocks(content.slice(split), li);
        } else renderBlocks(content, li);
        list.append(li);
      }
      parent.append(list);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const header = splitRow(line);
      const aligns = splitRow(lines[i + 1]).map((cell) =>
        cell.startsWith(":") && cell.endsWith(":") ? "center" : cell.endsWith(":") ? "right" : cell.startsWith(":") ? "left" : "",
      );
      const wrap = node("div", "llmstream-table");
      const table = node("table");
      const thead = node("thead");
      const headRow = node("tr");
      header.forEach((cell, n) => {
        const th = node("th");
        if (aligns[n]) th.style.textAlign = aligns[n];
        renderInline(cell, th);
        headRow.append(th);
      });
      thead.append(headRow);
      table.append(thead);
      const tbody = node("tbody");
      i += 2;
      while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
        const tr = node("tr");
        const cells = splitRow(lines[i]);
        header.forEach((_, n) => {
          const td = node("td");
          if (aligns[n]) td.style.textAlign = aligns[n];
          renderInline(cells[n] || "", td);
          tr.append(td);
        });
        tbody.append(tr);
        i += 1;
      }
      table.append(tbody);
      wrap.append(table);
      parent.append(wrap);
      continue;
    }
    // A paragraph: up to a blank line or the start of another block.
    const paragraph = [line.trim()];
    i += 1;
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1])) {
      paragraph.push(lines[i].trim());
      i += 1;
    }
    const p = node("p");
    renderInline(paragraph.join("\n"), p);
    parent.append(p);
  }
}

/**
 * Render Markdown as a DocumentFragment: paragraphs (single newlines kept as line breaks),
 * headings, lists (nested), block quotes, fenced code, tables, rules, code spans, bold,
 * italic, strikethrough, links and autolinks (http, https and mailto only, opened in a new
 * tab with rel="nofollow noopener noreferrer"); images become links. Safe for any input:
 * it creates elements and text nodes itself and never parses HTML, so `<script>` or
 * `<img onerror>` in the text stay text.
 */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  renderBlocks(String(text ?? "").replace(/\r\n?/g, "\n").replace(/\0/g, "").split("\n"), fragment);
  return fragment;
}
