// The costs page: charts, the CSV upload (the file itself as the request body), the
// aggregate-by-tag choice, and live updates from the `finops` and `jobs` channels.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const COLORS = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828", "#00838f", "#5d4037", "#9e9d24"];

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function drawCharts() {
    const source = $("#finops-chart-data");
    if (!source || !window.Chart) return;
    const data = JSON.parse(source.textContent);
    // One dataset per currency: amounts in different currencies are never stacked or summed.
    const currencies = [...new Set(data.series.map((p) => p.currency))];
    const series = $("#finops-series");
    if (series && data.series.length) {
      const starts = [...new Set(data.series.map((p) => p.start))];
      new window.Chart(series, {
        type: "line",
        data: {
          labels: starts,
          datasets: currencies.map((cur, i) => ({
            label: cur,
            data: starts.map((s) => {
              const point = data.series.find((p) => p.start === s && p.currency === cur);
              return point ? point.effective_cost : 0;
            }),
            borderColor: COLORS[i % COLORS.length],
            backgroundColor: COLORS[i % COLORS.length],
          })),
        },
        options: { animation: false, responsive: true, plugins: { legend: { display: true } } },
      });
    }
    const breakdown = $("#finops-breakdown");
    if (breakdown && data.breakdown.length) {
      new window.Chart(breakdown, {
        type: "bar",
        data: {
          labels: data.breakdown.map((i) => `${i.key} (${i.currency})`),
          datasets: [
            {
              label: "effective cost",
              data: data.breakdown.map((i) => i.effective_cost),
              backgroundColor: data.breakdown.map((i) => COLORS[currencies.indexOf(i.currency) % COLORS.length] || COLORS[0]),
            },
          ],
        },
        options: { animation: false, indexAxis: "y", responsive: true, plugins: { legend: { display: false } } },
      });
    }
  }

  async function upload(form) {
    const status = $(".import-status", form);
    const error = $(".error", form);
    error.hidden = true;
    const file = form.elements.file.files[0];
    if (!file) return;
    const params = new URLSearchParams({ filename: file.name.replace(/[\\/\x00-\x1f]/g, "_").slice(0, 255) });
    if (form.elements.format.value) params.set("format", form.elements.format.value);
    status.textContent = `Uploading ${file.name}…`;
    const response = await fetch(`/api/v1/finops/imports?${params}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "text/csv", "X-CSRF-Token": csrfToken(), Accept: "application/json" },
      body: file,
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = body && (Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail);
      error.textContent = `${detail || `The server answered ${response.status}`} (${(body && body.code) || `HTTP_${response.status}`})`;
      error.hidden = false;
      status.textContent = "";
      return;
    }
    status.textContent = body.message;
    form.dataset.importId = String(body.id);
    if (body.status === "completed" || body.status === "failed") reloadSoon();
  }

  let timer = null;
  function reloadSoon() {
    clearTimeout(timer);
    // Do not pull the page from under someone typing into a form.
    timer = setTimeout(() => {
      const active = document.activeElement;
      if (active && active.closest("form") && active.matches("input, textarea, select")) reloadSoon();
      else window.location.reload();
    }, 400);
  }

  function onEvent(msg) {
    if (msg.type === "finops") reloadSoon();
    if (msg.type === "job" && msg.data && msg.data.kind === "finops_import") {
      const status = $("#import-form .import-status");
      if (status && msg.data.progress != null) status.textContent = `Importing… ${msg.data.progress} %`;
    }
  }

  function connect(delay = 1000) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "subscribe", channels: ["finops", "jobs"] })));
    socket.addEventListener("message", (message) => {
      const msg = JSON.parse(message.data);
      if (msg.type === "subscribed") document.body.dataset.finopsLive = "on";
      else onEvent(msg);
    });
    socket.addEventListener("close", (event) => {
      document.body.dataset.finopsLive = "off";
      if (event.code !== 1008) setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    });
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.id === "import-form") {
      event.preventDefault();
      upload(form).catch((err) => {
        $(".error", form).textContent = `Upload failed: ${err.message} (CLIENT_ERROR)`;
        $(".error", form).hidden = false;
      });
    } else if (form.id === "finops-filter") {
      const tag = form.elements.tag.value.trim();
      if (tag) form.elements.aggregate.value = "";
      if (tag) {
        event.preventDefault();
        const params = new URLSearchParams({ window: form.elements.window.value, aggregate: `tag:${tag}` });
        window.location.assign(`/finops?${params}`);
      }
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    drawCharts();
    connect();
  });
})();
