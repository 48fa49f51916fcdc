/* django-llmstream admin: the usage report's chart, drawn as SVG. No dependencies.
 *
 * Reads the per-day figures from the JSON the page embeds (#llm-usage-data) and draws one
 * bar per day: input and output tokens stacked, or cost, or turns. Each bar has a <title>
 * tooltip with the exact figures; the table under the chart has them too.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var box = document.getElementById("llm-usage-chart");
  var source = document.getElementById("llm-usage-data");
  if (!box || !source) {
    return;
  }
  var days = JSON.parse(source.textContent).days || [];
  var labels = box.dataset;

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, attrs[key]);
    });
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function niceMax(value) {
    if (value <= 0) {
      return 1;
    }
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i += 1) {
      if (steps[i] * power >= value) {
        return steps[i] * power;
      }
    }
    return 10 * power;
  }

  function format(value, metric) {
    if (metric === "cost") {
      return value >= 1 ? value.toFixed(2) : value.toPrecision(2);
    }
    if (value >= 1e6) {
      return (value / 1e6).toFixed(1) + "M";
    }
    if (value >= 1e4) {
      return (value / 1e3).toFixed(0) + "k";
    }
    return String(Math.round(value));
  }

  function series(day, metric) {
    if (metric === "tokens") {
      return [
        { value: day.input_tokens, cls: "llm-bar-input", label: labels.labelInput },
        { value: day.output_tokens, cls: "llm-bar-output", label: labels.labelOutput },
      ];
    }
    if (metric === "cost") {
      return [{ value: parseFloat(day.cost), cls: "llm-bar-cost", label: labels.labelCost }];
    }
    return [{ value: day.turns, cls: "llm-bar-turns", label: labels.labelTurns }];
  }

  function draw(metric) {
    var width = 960;
    var height = 260;
    var left = 56;
    var right = 12;
    var top = 12;
    var bottom = 28;
    var plotW = width - left - right;
    var plotH = height - top - bottom;
    var totals = days.map(function (day) {
      return series(day, metric).reduce(function (sum, part) {
        return sum + part.value;
      }, 0);
    });
    var max = niceMax(Math.max.apply(null, totals.concat([0])));
    var svg = el("svg", {
      viewBox: "0 0 " + width + " " + height,
      role: "img",
      "aria-label": metric,
    });

    for (var g = 0; g <= 4; g += 1) {
      var y = top + plotH - (plotH * g) / 4;
      svg.append(el("line", { x1: left, x2: width - right, y1: y, y2: y, class: g ? "llm-grid" : "llm-axis" }));
      svg.append(el("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, format((max * g) / 4, metric)));
    }

    var slot = plotW / Math.max(days.length, 1);
    var barW = Math.max(Math.min(slot * 0.7, 40), 1);
    var labelEvery = Math.ceil(days.length / 12);
    days.forEach(function (day, index) {
      var x = left + slot * index + (slot - barW) / 2;
      var base = top + plotH;
      var parts = series(day, metric);
      var tip = day.day + "\n" + parts.map(function (part) {
        return part.label + ": " + (metric === "cost" ? day.cost : part.value);
      }).join("\n");
      parts.forEach(function (part) {
        var h = (plotH * part.value) / max;
        if (h <= 0) {
          return;
        }
        base -= h;
        var rect = el("rect", { x: x, y: base, width: barW, height: h, class: part.cls });
        rect.append(el("title", {}, tip));
        svg.append(rect);
      });
      if (index % labelEvery === 0) {
        svg.append(el("text", { x: x + barW / 2, y: height - 10, "text-anchor": "middle" }, day.day.slice(5)));
      }
    });

    box.textContent = "";
    box.append(svg);
    var legend = document.createElement("div");
    legend.className = "llm-legend";
    series(days[0] || { input_tokens: 0, output_tokens: 0, cost: "0", turns: 0 }, metric).forEach(function (part) {
      var item = document.createElement("span");
      item.className = part.cls;
      item.textContent = part.label;
      legend.append(item);
    });
    box.append(legend);
  }

  var buttons = document.querySelectorAll(".llm-chart-metrics [data-metric]");
  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      buttons.forEach(function (other) {
        other.setAttribute("aria-pressed", String(other === button));
      });
      draw(button.dataset.metric);
    });
  });
  draw("tokens");
})();
