// The demo chat page of django-llmstream: the conversation list is this page's own; the chat
// itself is the app's {% llmstream_chat %} widget (llmstream.js, no dependencies), which
// streams with POST turns/ + EventSource, resumes after a reload, stops, regenerates and
// renders safe Markdown. Model output never reaches the page as HTML.

import { errorFromResponse } from "./django_llmstream/llmstream.js";
import { mountChat } from "./django_llmstream/llmstream-chat.js";

const config = JSON.parse(document.getElementById("llmstream-config").textContent);
const api = (path) => config.apiRoot + path;

const $ = (id) => document.getElementById(id);

const els = {
  list: $("conversation-list"),
  listEmpty: $("conversation-empty"),
  loadMore: $("load-more"),
  newChat: $("new-chat"),
  status: $("sidebar-status"),
};

const widget = mountChat(document.querySelector("[data-llmstream-chat]"));

const state = {
  conversation: null, // id of the open conversation; null for a new chat
  next: null, // URL of the next page of conversations
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function setStatus(text) {
  els.status.textContent = text || "";
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

function newChat() {
  state.conversation = null;
  widget.newChat();
  markActive();
}

// -- wiring -------------------------------------------------------------------------------

widget.root.addEventListener("llmstream:conversation", (event) => {
  state.conversation = event.detail.id;
  markActive();
  refreshConversations();
});
widget.root.addEventListener("llmstream:turnend", () => refreshConversations());
els.list.addEventListener("click", (event) => {
  const button = event.target.closest("button.conversation");
  if (!button) return;
  state.conversation = button.dataset.id;
  markActive();
  widget.open(button.dataset.id);
});
els.newChat.addEventListener("click", newChat);
els.loadMore.addEventListener("click", () => {
  if (state.next) loadConversations(state.next, true);
});

refreshConversations();
