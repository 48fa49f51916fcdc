// Types of llmstream.js, django-llmstream's browser client (docs/frontends.rst).

export declare const VERSION: string;
export declare const EVENT_TYPES: readonly ["start", "delta", "reasoning", "tool_call", "done", "error"];

/** The request body of POST turns/ and POST stream/ (docs/protocol.rst). */
export interface TurnRequest {
  prompt: string;
  conversation?: string | null;
  provider?: string;
  model?: string;
  system?: string;
  params?: Record<string, number | string | boolean | string[]>;
}

export interface StartEvent {
  conversation: string;
  turn: string;
  provider: string;
  model: string;
}

export interface TextEvent {
  text: string;
  /** The id of the (last) event this text came with. */
  id: string;
}

export interface ToolCallEvent {
  index: number;
  id: string | null;
  name: string | null;
  arguments: string;
}

export interface Usage {
  input_tokens: number | null;
  output_tokens: number | null;
  cached_input_tokens: number | null;
  reasoning_tokens: number | null;
}

export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter" | "cancelled";

export interface DoneEvent {
  finish_reason: FinishReason;
  usage: Usage;
  /** A decimal string, e.g. "0.00002200", or null when the price is unknown. */
  cost: string | null;
  ttft_ms: number | null;
  duration_ms: number | null;
  /** Only on a done that stop() made up because the server did not confirm in time. */
  local?: true;
}

export interface ErrorEvent {
  type: string;
  message: string;
  retryable: boolean;
  /** The rest only on errors of the client or of a refused request. */
  field?: string | null;
  status?: number | null;
  retryAfter?: number | null;
  /** The request was refused before anything started: nothing was stored. */
  refused?: boolean;
}

export interface SavedTurn {
  turn: string;
  conversation: string | null;
  eventsUrl: string;
  stopUrl: string;
  lastEventId: string;
  text: string;
  reasoning: string;
  toolCalls: Array<{ id: string | null; name: string | null; arguments: string }>;
}

export type TurnStatus = "idle" | "connecting" | "streaming" | "reconnecting" | "stopping" | "done" | "error";

export interface TurnHandlers {
  onStart?: (data: StartEvent, turn: Turn) => void;
  onDelta?: (data: TextEvent, turn: Turn) => void;
  onReasoning?: (data: TextEvent, turn: Turn) => void;
  onToolCall?: (data: ToolCallEvent, turn: Turn) => void;
  onDone?: (data: DoneEvent, turn: Turn) => void;
  onError?: (data: ErrorEvent, turn: Turn) => void;
  onResume?: (data: SavedTurn, turn: Turn) => void;
  onStatus?: (status: TurnStatus, turn: Turn) => void;
}

export interface ClientOptions {
  /** Where django_llmstream.urls is mounted. Default "/llmstream/". */
  root?: string;
  /** The CSRF token (or a function returning it); default: the csrftoken cookie. */
  csrfToken?: string | (() => string) | null;
  /** sessionStorage key of the running turn. Default "llmstream:turn". */
  storageKey?: string;
  /** Remember the running turn to resume it after a reload. Default true. */
  resume?: boolean;
  /** At most one delta/reasoning callback per animation frame. Default false. */
  coalesce?: boolean;
  /** Reconnections after EventSource gave up. Default 5. */
  maxRetries?: number;
  /** Ms before the first reconnection, doubled each time. Default 1000. */
  retryDelay?: number;
  /** Ms stop() waits for the server's done. Default 5000. */
  stopTimeout?: number;
  /** Ms between sessionStorage saves. Default 250. */
  saveInterval?: number;
  withCredentials?: boolean;
  /** Another fetch (tests, instrumentation). */
  fetch?: typeof fetch;
  /** Another Storage, or null for none. Default sessionStorage. */
  storage?: Storage | null;
}

export type TurnOptions = Partial<ClientOptions> & TurnHandlers;

export interface TurnEventMap {
  start: CustomEvent<StartEvent>;
  delta: CustomEvent<TextEvent>;
  reasoning: CustomEvent<TextEvent>;
  tool_call: CustomEvent<ToolCallEvent>;
  done: CustomEvent<DoneEvent>;
  error: CustomEvent<ErrorEvent>;
  resume: CustomEvent<SavedTurn>;
  status: CustomEvent<TurnStatus>;
}

export type TurnResult =
  | { type: "done"; data: DoneEvent }
  | { type: "error"; data: ErrorEvent }
  | { type: "closed"; data: null };

export declare class Turn extends EventTarget {
  readonly client: Client;
  id: string | null;
  conversation: string | null;
  eventsUrl: string | null;
  stopUrl: string | null;
  lastEventId: string;
  text: string;
  reasoning: string;
  toolCalls: Array<{ id: string | null; name: string | null; arguments: string }>;
  status: TurnStatus;
  result: TurnResult | null;
  /** Resolves when the turn ends (done or error) or is closed. */
  readonly finished: Promise<TurnResult>;
  readonly ended: boolean;
  /** Stop the generation; resolves when the turn has ended. */
  stop(): Promise<TurnResult>;
  /** Stop watching; the generation runs on while anyone watches. */
  close(): void;
  addEventListener<K extends keyof TurnEventMap>(
    type: K,
    listener: (event: TurnEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

export interface Conversation {
  id: string;
  title: string;
  provider: string;
  model: string;
  created_at: string;
  updated_at: string;
}

export interface ConversationDetail extends Conversation {
  system_prompt: string;
  messages: Array<{
    id: string;
    role: "user" | "assistant" | "tool" | "system";
    content: string;
    status: "pending" | "streaming" | "completed" | "cancelled" | "failed" | "interrupted";
    finish_reason: string;
    model: string;
    input_tokens: number | null;
    output_tokens: number | null;
    cost: string | null;
    created_at: string;
  }>;
}

export declare class Client {
  constructor(options?: ClientOptions);
  readonly root: string;
  url(path: string): string;
  csrfToken(): string;
  /** POST turns/, then EventSource on the turn's events/. */
  start(body: TurnRequest, options?: TurnOptions): Turn;
  /** The one-step POST stream/, read with fetch. */
  stream(body: TurnRequest, options?: TurnOptions): Turn;
  /** Watch a turn by id from lastEventId on (from its start without one). */
  attach(
    turnId: string,
    options?: TurnOptions & { lastEventId?: string | number; conversation?: string | null; text?: string; reasoning?: string },
  ): Turn;
  /** The turn saved before a reload, if any. */
  pending(): SavedTurn | null;
  forget(): void;
  /** Resume the saved turn: "resume" with the saved text, then the events after it. */
  resume(options?: TurnOptions): Turn | null;
  conversations(url?: string): Promise<{ results: Conversation[]; next: string | null }>;
  conversation(id: string): Promise<ConversationDetail>;
}

export interface ParsedEvent {
  type: string;
  data: string;
  id: string;
  retry: number | null;
}

/** Incremental text/event-stream parser (WHATWG rules). */
export declare class SSEParser {
  constructor(onEvent: (event: ParsedEvent) => void);
  lastEventId: string;
  retry: number | null;
  push(chunk: Uint8Array | string): void;
  end(): void;
}

export declare class LLMStreamError extends Error {
  constructor(error: Omit<ErrorEvent, "refused">);
  type: string;
  field: string | null;
  retryable: boolean;
  status: number | null;
  retryAfter: number | null;
}

export declare function getCsrfToken(cookieName?: string): string;
export declare function errorFromResponse(response: Response): Promise<Required<Omit<ErrorEvent, "refused">>>;
/** The URL if it is absolute http(s) or mailto, else null. */
export declare function safeUrl(url: string): string | null;
/** Safe Markdown: builds elements and text nodes, never parses HTML. */
export declare function renderMarkdown(text: string): DocumentFragment;

/** Complete lines (LF, CRLF or CR) of text that arrives in pieces. */
export declare class LineSplitter {
  push(text: string): string[];
  end(): string[];
}

/** Sentences (. ! ? … 。！？ followed by whitespace, or a line break) of text in pieces. */
export declare class SentenceSplitter {
  push(text: string): string[];
  end(): string[];
}

/** Top-level JSON values (a top-level array's elements one by one; NDJSON objects). */
export declare class JSONValueSplitter {
  push(text: string): unknown[];
  /** Throws a SyntaxError when the stream ended inside a value. */
  end(): unknown[];
}

/** A Turn (its deltas from now on; its error event throws an LLMStreamError) or text pieces. */
export type TextSource = Turn | AsyncIterable<string>;

export declare function lines(source: TextSource): AsyncIterableIterator<string>;
export declare function sentences(source: TextSource): AsyncIterableIterator<string>;
export declare function jsonValues<T = unknown>(source: TextSource): AsyncIterableIterator<T>;
