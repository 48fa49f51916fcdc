// Glue between htmx and a {% llmstream_htmx_form %} (a plain script, after htmx):
// - errors of POST turns/?format=html come with their 4xx/5xx status, which htmx does not
//   swap by default: show their fragment in the form's [data-llmstream-errors] instead;
// - after a turn starts, the form's hidden `conversation` field takes the new conversation's
//   id (the X-LLMStream-Conversation header), so the next prompt continues it;
// - a sent prompt clears the textarea and the old errors.
(function () {
  "use strict";

  function formOf(detail) {
    const elt = detail && detail.requestConfig ? detail.requestConfig.elt : detail && detail.elt;
    return elt && elt.closest ? elt.closest("[data-llmstream-form]") : null;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    const detail = event.detail;
    const form = formOf(detail);
    if (!form || !detail.xhr.getResponseHeader("X-LLMStream-Error")) return;
    const box = form.querySelector("[data-llmstream-errors]");
    if (!box) return;
    detail.shouldSwap = true;
    detail.isError = false;
    detail.target = box;
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    const form = formOf(event.detail);
    const box = form && form.querySelector("[data-llmstream-errors]");
    if (box) box.replaceChildren();
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    const detail = event.detail;
    const form = formOf(detail);
    if (!form || !detail.successful) return;
    const conversation = detail.xhr.getResponseHeader("X-LLMStream-Conversation");
    const field = form.querySelector("[data-llmstream-conversation]");
    if (conversation && field) field.value = conversation;
    const prompt = form.querySelector("textarea[name=prompt]");
    if (prompt) {
      prompt.value = "";
      prompt.focus();
    }
  });

  document.addEventListener("keydown", function (event) {
    // Enter sends, Shift+Enter is a new line, as in the chat widget.
    const target = event.target;
    if (!(target instanceof HTMLTextAreaElement) || event.key !== "Enter") return;
    if (event.shiftKey || event.isComposing || event.keyCode === 229) return;
    const form = target.closest("form[data-llmstream-form].llmstream-htmx");
    if (!form) return;
    event.preventDefault();
    form.requestSubmit();
  });
})();
