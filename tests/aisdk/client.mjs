// The Vercel AI SDK's own client against ?format=ai-sdk (run by tests/test_aisdk.py).
//
//   node client.mjs PACKAGE parse FILE       a recorded response body through
//                                            DefaultChatTransport (every part validated with
//                                            the package's uiMessageChunkSchema), then
//                                            readUIMessageStream: prints {chunks, message, error}
//   node client.mjs PACKAGE chat ROOT        a conversation with a live server (ROOT: where
//                                            django_llmstream.urls is mounted), with a
//                                            disconnect and DefaultChatTransport's reconnect
//
// PACKAGE is "ai" (the newest 5.x) or "ai-5.0.0" (strict part schema).
import { readFileSync } from "node:fs";

const [, , pkg, mode, arg] = process.argv;
const { DefaultChatTransport, readUIMessageStream } = await import(pkg);

async function collect(stream, { stopWhen } = {}) {
  const chunks = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    if (stopWhen && stopWhen(value)) {
      await reader.cancel();
      break;
    }
  }
  return chunks;
}

async function finalMessage(chunks) {
  const stream = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
  let last = null;
  const errors = [];
  for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(String(e)) })) {
    last = message;
  }
  return { message: last, errors };
}

function userMessage(id, text) {
  return { id, role: "user", parts: [{ type: "text", text }] };
}

if (mode === "parse") {
  const body = readFileSync(arg);
  const transport = new DefaultChatTransport({
    api: "http://test.invalid/llmstream/stream/?format=ai-sdk",
    fetch: async () => new Response(body, { headers: { "content-type": "text/event-stream" } }),
  });
  const out = { chunks: null, message: null, errors: [], error: null };
  try {
    const stream = await transport.sendMessages({
      chatId: "chat",
      messages: [userMessage("u1", "Hi")],
      trigger: "submit-message",
      messageId: undefined,
      abortSignal: undefined,
    });
    out.chunks = await collect(stream);
    Object.assign(out, await finalMessage(out.chunks));
  } catch (error) {
    out.error = String(error);
  }
  console.log(JSON.stringify(out));
} else if (mode === "chat") {
  // A fetch with a cookie jar, like a browser on the site's page.
  const nodeFetch = globalThis.fetch;
  const token = "t".repeat(32);
  const cookies = new Map([["csrftoken", token]]);
  const jarFetch = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set("cookie", [...cookies].map(([k, v]) => `${k}=${v}`).join("; "));
    const response = await nodeFetch(url, { ...init, headers });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const at = pair.indexOf("=");
      cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
    return response;
  };
  // The page's fetch: relative URLs against the server, with the page's cookies.
  globalThis.fetch = (url, init) => jarFetch(new URL(url, arg).href, init);
  const getCsrfToken = () => cookies.get("csrftoken");

  // The code of docs/frontends.rst, as a page of the site runs it.
  // example: transport start
  const transport = new DefaultChatTransport({
    api: "/llmstream/stream/?format=ai-sdk",
    headers: () => ({ "X-CSRFToken": getCsrfToken() }),
  });
  // example: transport end
  const chatId = "chat-" + Math.random().toString(36).slice(2);
  const out = {};

  // 1. A first answer, read to its end.
  const first = await collect(
    await transport.sendMessages({
      chatId,
      messages: [userMessage("u1", "First question")],
      trigger: "submit-message",
      abortSignal: undefined,
    }),
  );
  out.first = await finalMessage(first);
  // Nothing runs now: the reconnect route answers 204, which the transport reads as null.
  out.idleReconnect = await transport.reconnectToStream({ chatId });

  // 2. The next prompt of the same chat; the client goes away after the first text.
  const controller = new AbortController();
  const second = await collect(
    await transport.sendMessages({
      chatId,
      messages: [userMessage("u1", "First question"), out.first.message, userMessage("u2", "Second")],
      trigger: "submit-message",
      abortSignal: controller.signal,
    }),
    { stopWhen: (chunk) => chunk.type === "text-delta" },
  );
  controller.abort();
  out.secondBeforeDrop = second.map((chunk) => chunk.type);

  // 3. Reconnect (what useChat({resume: true}) does after a reload): the whole running turn.
  const resumed = await transport.reconnectToStream({ chatId });
  out.resumed = resumed === null ? null : await finalMessage(await collect(resumed));
  out.afterReconnect = await transport.reconnectToStream({ chatId });
  console.log(JSON.stringify(out));
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
