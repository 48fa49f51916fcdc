/* django-llmstream admin: follow a running turn's events in its message page.
 *
 * Opens an EventSource on the admin's own events URL (staff only; the text is left out there
 * when HIDE_CONTENT_FROM_STAFF applies) and writes what arrives with text nodes only: model
 * output is data, never markup. No dependencies.
 */
(function () {
  "use strict";

  var root = document.getElementById("llm-live");
  if (!root || typeof window.EventSource !== "function") {
    return;
  }
  var labels = root.dataset;
  var text = root.querySelector("[data-live-text]");
  var reasoningBox = root.querySelector("[data-live-reasoning-box]");
  var reasoning = root.querySelector("[data-live-reasoning]");
  var tools = root.querySelector("[data-live-tools]");
  var status = root.querySelector("[data-live-status]");
  var stats = root.querySelector("[data-live-stats]");
  var end = root.querySelector("[data-live-end]");
  var stopButton = root.querySelector(".llm-stop-button");

  var chars = 0;
  var hiddenChars = 0;
  var events = 0;
  var calls = {};

  function showStats() {
    var parts = [];
    if (hiddenChars) {
      parts.push(hiddenChars + " " + labels.labelHidden);
    } else {
      parts.push(chars + " " + labels.labelChars);
    }
    parts.push(events + " events");
    stats.textContent = parts.join(" · ");
  }

  function setStatus(value, label) {
    status.className = "llm-badge llm-badge-" + value;
    status.textContent = label || value;
  }

  function finish(message) {
    text.classList.remove("llm-live-running");
    end.hidden = false;
    end.textContent = message;
    if (stopButton) {
      stopButton.disabled = true;
    }
    source.close();
  }

  function toolCall(data) {
    var call = calls[data.index];
    if (!call) {
      var box = document.createElement("div");
      box.className = "llm-tool";
      var name = document.createElement("code");
      name.textContent = data.name || "?";
      var args = document.createElement("pre");
      box.append(name, args);
      tools.append(box);
      call = calls[data.index] = { args: args };
    }
    if (data.hidden) {
      hiddenChars += data.chars || 0;
    } else if (data.arguments) {
      call.args.append(data.arguments);
    }
  }

  var source = new EventSource(root.dataset.eventsUrl);

  function on(name, handler) {
    source.addEventListener(name, function (event) {
      var data;
      try {
        data = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      events += 1;
      handler(data);
      showStats();
    });
  }

  on("start", function () {
    // The stream starts from the turn's first event: what the page showed is replaced.
    text.textContent = "";
    reasoning.textContent = "";
    tools.textContent = "";
    calls = {};
    chars = hiddenChars = events = 0;
    text.classList.add("llm-live-running");
    setStatus("streaming");
  });
  on("delta", function (data) {
    if (data.hidden) {
      hiddenChars += data.chars || 0;
    } else {
      chars += data.text.length;
      text.append(data.text);
    }
  });
  on("reasoning", function (data) {
    reasoningBox.hidden = false;
    if (data.hidden) {
      hiddenChars += data.chars || 0;
    } else {
      reasoning.append(data.text);
    }
  });
  on("tool_call", toolCall);
  on("done", function (data) {
    var cancelled = data.finish_reason === "cancelled";
    setStatus(cancelled ? "cancelled" : "completed");
    var usage = data.usage || {};
    var facts = [
      "finish: " + data.finish_reason,
      "tokens " + usage.input_tokens + " / " + usage.output_tokens,
    ];
    if (data.cost !== null && data.cost !== undefined) {
      facts.push("cost " + data.cost);
    }
    if (data.duration_ms !== null && data.duration_ms !== undefined) {
      facts.push(data.duration_ms + " ms");
    }
    finish(facts.join(" · ") + ". " + labels.labelReload);
  });
  on("error", function (data) {
    setStatus(data.type === "interrupted" ? "interrupted" : "failed");
    finish(data.type + ": " + data.message + ". " + labels.labelReload);
  });
  source.onerror = function () {
    // EventSource reconnects by itself with Last-Event-ID; say so while it does.
    if (source.readyState === EventSource.CONNECTING) {
      stats.textContent = labels.labelLost;
    }
  };
  showStats();
})();
