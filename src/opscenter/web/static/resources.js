// Resource pages: graphs drawn from the history API, gauges refreshed from the
// infrastructure API, and alert changes live from the WebSocket's `resources` channel.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const COLORS = ["#1565c0", "#b26a00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f"];
  const charts = {};

  function oc() {
    return window.opscenter;
  }

  async function drawGraphs() {
    const box = $("#graphs");
    if (!box || !window.Chart) return;
    const params = new URLSearchParams({ window: box.dataset.window });
    if (box.dataset.serverId) params.set("server_id", box.dataset.serverId);
    for (const canvas of $$("canvas[data-graph]", box)) {
      const metric = canvas.dataset.graph;
      params.set("metric", metric);
      let data;
      try {
        data = await oc().api("GET", `/api/v1/resources/metrics/history?${params}`);
      } catch (err) {
        const error = $("#graphs-error");
        error.textContent = err.message;
        error.hidden = false;
        return;
      }
      const empty = !data.series.some((s) => s.points.length);
      $(`[data-empty="${metric}"]`, box).hidden = !empty;
      const labels = data.series.length ? data.series[0].points.map((p) => p.timestamp.slice(5, 16).replace("T", " ")) : [];
      const datasets = data.series.map((s, i) => ({
        label: s.label || metric,
        data: s.points.map((p) => p.value),
        borderColor: COLORS[i % COLORS.length],
        backgroundColor: COLORS[i % COLORS.length],
        pointRadius: 0,
      }));
      if (charts[metric]) charts[metric].destroy();
      charts[metric] = new window.Chart(canvas, {
        type: "line",
        data: { labels, datasets },
        options: { animation: false, responsive: true, scales: { y: { beginAtZero: true } } },
      });
      canvas.dataset.points = String(data.series.reduce((n, s) => n + s.points.length, 0));
    }
    box.dataset.drawn = "true";
  }

  async function refreshGauges() {
    const grid = $("[data-live-infrastructure]");
    if (!grid) return;
    try {
      const { items } = await oc().api("GET", "/api/v1/resources/infrastructure");
      for (const item of items) {
        const card = $(`[data-source="${item.server_id || "host"}"]`, grid);
        if (!card) continue;
        for (const [key, value] of Object.entries(item.metrics)) {
          const text = $(`[data-metric="${CSS.escape(key)}"]`, card);
          if (text) text.textContent = value.toFixed(1);
          const meter = $(`[data-meter="${CSS.escape(key)}"]`, card);
          if (meter) meter.value = value;
        }
      }
    } catch (_) {
      // The next round tries again; the page still shows the last values.
    }
  }

  function connect(delay = 1000) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "subscribe", channels: ["resources"] })));
    socket.addEventListener("message", (message) => {
      const msg = JSON.parse(message.data);
      if (msg.type !== "resource_alert") return;
      const data = msg.data || {};
      const kind = msg.action === "fired" ? "error" : msg.action === "resolved" ? "ok" : "info";
      oc().toast(`Alert ${data.alert_id} ${msg.action}: ${data.message || ""}`, kind);
      const table = $("[data-live-alerts]");
      const typing = document.activeElement && document.activeElement.tagName === "INPUT";
      if ((table || $("#resource-rules")) && !typing) window.location.reload();
    });
    socket.addEventListener("close", (event) => {
      if (event.code !== 1008) setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    });
  }

  document.addEventListener("click", async (event) => {
    if (!(event.target instanceof Element) || event.target.id !== "collect-now") return;
    const button = event.target;
    button.setAttribute("aria-busy", "true");
    try {
      const job = await oc().api("POST", "/api/v1/resources/collect");
      oc().toast(`Collection round queued (job ${job.job_id})`, "ok");
      setTimeout(refreshGauges, 3000);
    } catch (err) {
      oc().toast(err.message, "error");
    } finally {
      button.removeAttribute("aria-busy");
    }
  });

  window.addEventListener("load", () => {
    drawGraphs();
    refreshGauges();
    if ($("[data-live-infrastructure]")) setInterval(refreshGauges, 15000);
    if ($("#graphs")) setInterval(drawGraphs, 60000);
    if ($("#current-user")) connect();
  });
})();
