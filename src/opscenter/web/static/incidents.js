// Incidents pages: evidence upload with progress, the custody log, task status, live
// refresh of the parts marked data-live-refresh, and the SLA chart with its forecast.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const csrf = () => {
    const m = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  };
  const errorText = (body, status) =>
    `${(body && typeof body.detail === "string" && body.detail) || `The server answered ${status}`} (${(body && body.code) || `HTTP_${status}`})`;

  // A file streams to the server as multipart; XMLHttpRequest reports upload progress.
  function uploadEvidence(form) {
    const box = $(".error", form);
    const bar = $("#evidence-progress");
    const data = new FormData(form);
    const file = data.get("file");
    if (!(file instanceof File) || file.size === 0) data.delete("file");
    if (!data.get("content")) data.delete("content");
    if (!data.get("supersedes_id")) data.delete("supersedes_id");
    box.hidden = true;
    bar.hidden = false;
    bar.value = 0;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/infra/incidents/${form.dataset.incident}/evidence`);
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (_) {}
      if (xhr.status === 201) {
        window.opscenter.toast(`Evidence #${body.id} added (sha256 ${body.sha256.slice(0, 12)}…)`, "ok");
        window.location.reload();
      } else {
        bar.hidden = true;
        box.textContent = errorText(body, xhr.status);
        box.hidden = false;
      }
    });
    xhr.addEventListener("error", () => {
      bar.hidden = true;
      box.textContent = "The upload was interrupted; try again (NETWORK_ERROR)";
      box.hidden = false;
    });
    xhr.send(data);
  }

  async function loadCustody(details) {
    const log = $(".custody-log", details);
    try {
      const page = await window.opscenter.api("GET", details.dataset.custody);
      log.innerHTML = "";
      const list = document.createElement("ol");
      for (const e of page.items) {
        const li = document.createElement("li");
        li.textContent = `${e.at} ${e.username} ${e.action}${e.ip_address ? ` from ${e.ip_address}` : ""}`;
        list.appendChild(li);
      }
      log.appendChild(list);
    } catch (err) {
      log.textContent = err.message;
    }
  }

  // Re-read the page and swap in the live parts (forms being typed into stay as they are).
  let pending = null;
  function refreshLive() {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const part of $$("[data-live-refresh]")) {
        const next = fresh.getElementById(part.id);
        if (next && !part.contains(document.activeElement)) part.replaceWith(next);
      }
    }, 300);
  }

  function connect(delay = 1000) {
    const channels = [...new Set($$("[data-live-channels]").map((el) => el.dataset.liveChannels))];
    if (!channels.length) return;
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "subscribe", channels })));
    socket.addEventListener("message", (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "incident" || msg.type === "task") refreshLive();
    });
    socket.addEventListener("close", (e) => {
      if (e.code !== 1008) setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    });
  }

  function drawSla() {
    const source = $("#sla-data");
    if (!source || !window.Chart) return;
    const d = JSON.parse(source.textContent);
    const labels = [...d.weeks, ...d.forecast_weeks];
    const pad = (values, before, after) => [...Array(before).fill(null), ...values, ...Array(after).fill(null)];
    const last = d.sla.length ? [d.sla[d.sla.length - 1]] : [];
    new window.Chart($("#sla-chart"), {
      data: {
        labels,
        datasets: [
          { type: "bar", label: "requested (h)", data: d.requested, backgroundColor: "#90caf9", yAxisID: "hours" },
          { type: "bar", label: "delivered (h)", data: d.delivered, backgroundColor: "#1565c0", yAxisID: "hours" },
          { type: "line", label: "SLA %", data: d.sla, borderColor: "#2e7d32", backgroundColor: "#2e7d32", yAxisID: "pct" },
          {
            type: "line",
            label: "forecast %",
            data: pad([...last, ...d.forecast], Math.max(0, d.sla.length - last.length), 0),
            borderColor: "#2e7d32",
            borderDash: [6, 4],
            pointStyle: "crossRot",
            yAxisID: "pct",
          },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        scales: {
          hours: { position: "left", beginAtZero: true, title: { display: true, text: "hours" } },
          pct: { position: "right", min: 0, suggestedMax: 100, grid: { drawOnChartArea: false }, title: { display: true, text: "%" } },
        },
      },
    });
  }

  document.addEventListener("submit", (event) => {
    if (event.target.id === "evidence-form") {
      event.preventDefault();
      uploadEvidence(event.target);
    }
  });
  document.addEventListener("toggle", (event) => {
    const details = event.target;
    if (details instanceof HTMLDetailsElement && details.dataset.custody && details.open) loadCustody(details);
  }, true);
  document.addEventListener("change", async (event) => {
    const select = event.target.closest && event.target.closest("[data-task-status]");
    if (!select) return;
    try {
      await window.opscenter.api("PATCH", `/api/v1/infra/tasks/${select.dataset.taskStatus}`, { status: select.value });
      window.opscenter.toast(`Task ${select.dataset.taskStatus} is ${select.value}`, "ok");
    } catch (err) {
      window.opscenter.toast(err.message, "error");
    }
  });
  document.addEventListener("DOMContentLoaded", () => {
    drawSla();
    connect();
  });
})();
