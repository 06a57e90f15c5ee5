// The AI models page: the charts of each model's last 24 hours, the forms that need more
// than app.js's flat form-to-JSON (chains, labels, prompt versions, the prompt runner),
// and the live refresh of models, budget and calls from the `ai_models` channel.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // The API's one error format, {detail, code}, in words: "what went wrong (CODE)".
  async function api(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      let detail = data && data.detail;
      if (Array.isArray(detail)) {
        detail = detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${String(d.msg || "").replace(/^Value error, /, "")}`).join("; ");
      }
      throw new Error(`${detail || `The server answered ${response.status}`} (${(data && data.code) || `HTTP_${response.status}`})`);
    }
    return data;
  }

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = text == null ? "" : String(text);
    return div.innerHTML;
  }

  const words = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
  const teamOf = (el, key) => Number.parseInt(el.dataset[key], 10);

  function chainsBody(form) {
    const chains = $$(".chain-row", form)
      .map((row) => ({
        purpose: $(".chain-purpose", row).value.trim(),
        model_ids: $$(".chain-model", row).map((s) => Number.parseInt(s.value, 10)).filter((n) => n > 0),
        max_retries: Number.parseInt($(".chain-retries", row).value || "0", 10),
        backoff_seconds: Number.parseFloat($(".chain-backoff", row).value || "0"),
        cooldown_seconds: Number.parseInt($(".chain-cooldown", row).value || "0", 10),
      }))
      .filter((c) => c.purpose && c.model_ids.length);
    const budget = form.elements.budget_usd.value.trim();
    return {
      team_id: teamOf(form, "aiChains"),
      chains,
      budget_usd: budget === "" ? null : Number.parseFloat(budget),
      budget_period: form.elements.budget_period.value,
    };
  }

  function variablesOf(text) {
    const variables = {};
    for (const line of text.split("\n")) {
      const at = line.indexOf("=");
      if (at > 0) variables[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return variables;
  }

  function showAnswer(result) {
    const tries = result.attempts
      .map((a) => `${escapeHtml(a.model_name)}: ${escapeHtml(a.outcome)}${a.error ? ` (${escapeHtml(a.error)})` : ""}`)
      .join("; ");
    $("#run-result").innerHTML = `<article class="ai-answer"><p><strong>Answered by ${escapeHtml(result.model_name)}</strong>
      <small>(${escapeHtml(result.provider)} / ${escapeHtml(result.model)}, ${result.tokens_in} + ${result.tokens_out} tokens,
      ${result.cost_usd.toFixed(6)} USD, ${result.latency_ms.toFixed(0)} ms)</small></p>
      <pre class="ai-text">${escapeHtml(result.text)}</pre><p class="muted"><small>Attempts: ${tries}</small></p></article>`;
  }

  const forms = {
    aiChains: async (form) => {
      await api("PUT", "/api/v1/ai-models/fallback-config", chainsBody(form));
      window.location.reload();
    },
    aiLabels: async (form) => {
      await api("PUT", `/api/v1/ai-models/prompts/${form.dataset.aiLabels}/labels`, { labels: words(form.elements.prompt_labels.value) });
      window.location.reload();
    },
    aiPrompt: async (form) => {
      const f = form.elements;
      await api("POST", "/api/v1/ai-models/prompts", {
        team_id: teamOf(form, "aiPrompt"),
        name: f.name.value.trim(),
        system: f.system.value,
        template: f.template.value,
        labels: words(f.prompt_labels.value),
      });
      window.location.reload();
    },
    aiRun: async (form) => {
      const f = form.elements;
      $("#run-result").innerHTML = "<p aria-busy=\"true\">Calling the chain…</p>";
      try {
        showAnswer(await api("POST", "/api/v1/ai-models/run", {
          team_id: teamOf(form, "aiRun"),
          prompt: f.prompt.value.trim(),
          label: f.label.value.trim() || undefined,
          purpose: f.purpose.value.trim() || "default",
          variables: variablesOf(f.variables.value),
        }));
      } catch (err) {
        $("#run-result").innerHTML = "";
        throw err;
      }
    },
  };

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    const kind = form instanceof HTMLFormElement ? Object.keys(forms).find((k) => k in form.dataset) : null;
    if (!kind) return;
    event.preventDefault();
    const box = $(".error", form);
    box.hidden = true;
    const button = $("[type=submit]", form);
    button.setAttribute("aria-busy", "true");
    try {
      await forms[kind](form);
    } catch (err) {
      box.textContent = err.message;
      box.hidden = false;
    } finally {
      button.removeAttribute("aria-busy");
    }
  });

  const drawn = [];
  function drawCharts() {
    const source = $("#ai-chart-data");
    while (drawn.length) drawn.pop().destroy();
    if (!source || !window.Chart) return;
    const charts = JSON.parse(source.textContent);
    for (const canvas of $$("canvas[data-ai-chart]")) {
      const chart = charts[Number(canvas.dataset.aiChart)];
      drawn.push(new window.Chart(canvas, {
        data: {
          labels: chart.labels,
          datasets: [
            { type: "bar", label: "answered", data: chart.calls, stack: "calls", backgroundColor: "#2e7d32", yAxisID: "y" },
            { type: "bar", label: "failed", data: chart.failures, stack: "calls", backgroundColor: "#c62828", yAxisID: "y" },
            { type: "line", label: "avg latency (ms)", data: chart.latency, borderColor: "#1565c0", backgroundColor: "#1565c0", spanGaps: true, yAxisID: "y1" },
          ],
        },
        options: {
          animation: false,
          responsive: true,
          aspectRatio: 3,
          scales: {
            y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "calls" } },
            y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "ms" } },
          },
        },
      }));
    }
  }

  // Live: any change or call of this area re-renders models, budget and calls.
  let timer = null;
  function refresh() {
    const live = $("#ai-live");
    if (!live || !window.htmx) return;
    clearTimeout(timer);
    timer = setTimeout(() => window.htmx.trigger(live, "refresh"), 200);
  }

  function connect(delay = 1000) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "subscribe", channels: ["ai_models"] })));
    socket.addEventListener("message", (message) => {
      const msg = JSON.parse(message.data);
      if (msg.type === "subscribed") document.body.dataset.aiLive = "on";
      else if (msg.type === "ai_models") refresh();
    });
    socket.addEventListener("close", (event) => {
      document.body.dataset.aiLive = "off";
      if (event.code !== 1008) setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    });
  }

  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.target.id === "ai-live") drawCharts();
  });
  window.addEventListener("load", () => {
    drawCharts();
    if ($("#ai-live")) connect();
  });
})();
