// Security pages: report import (multipart), risk acceptance and its approval, assets,
// and the weekly trend chart.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const csrf = () => {
    const m = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  };
  const show = (form, message) => {
    const box = $(".error", form);
    box.textContent = message;
    box.hidden = false;
  };

  async function importReport(form) {
    const data = new FormData(form);
    const [kind, id] = String(data.get("target")).split(":");
    data.delete("target");
    data.set(kind === "server" ? "server_id" : "asset_id", id);
    if (!data.get("scanner")) data.delete("scanner");
    const response = await fetch("/api/v1/security/imports", {
      method: "POST",
      headers: { "X-CSRF-Token": csrf(), Accept: "application/json" },
      credentials: "same-origin",
      body: data,
    });
    const body = await response.json().catch(() => null);
    if (response.status !== 201) {
      show(form, `${(body && body.detail) || `The server answered ${response.status}`} (${(body && body.code) || response.status})`);
      return;
    }
    window.opscenter.toast(`Imported ${body.reported} findings: ${body.new} new, ${body.reopened} reopened, ${body.closed} closed`, "ok");
    window.location.reload();
  }

  async function call(form, method, url, payload) {
    try {
      await window.opscenter.api(method, url, payload);
      window.location.reload();
    } catch (err) {
      if (form) show(form, err.message);
      else window.opscenter.toast(err.message, "error");
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.id === "security-import") {
      event.preventDefault();
      importReport(form);
    } else if (form.classList.contains("accept-risk")) {
      event.preventDefault();
      const data = new FormData(form);
      call(form, "POST", `/api/v1/security/vulnerabilities/${form.dataset.finding}/risk-acceptance`, {
        reason: data.get("reason"),
        expires_at: `${data.get("expires_at")}T00:00:00Z`,
      });
    } else if (form.id === "asset-form") {
      event.preventDefault();
      const data = Object.fromEntries(new FormData(form));
      data.ports = String(data.ports || "").split(",").map((p) => p.trim()).filter(Boolean).map(Number);
      call(form, "POST", "/api/v1/secops/assets", data);
    }
  });
  document.addEventListener("click", (event) => {
    const approve = event.target.closest && event.target.closest("[data-approve]");
    if (approve) call(null, "POST", `/api/v1/security/vulnerabilities/${approve.dataset.approve}/risk-acceptance/approve`);
    const remove = event.target.closest && event.target.closest("[data-delete-asset]");
    if (remove && window.confirm("Delete this asset with its findings?")) {
      call(null, "DELETE", `/api/v1/secops/assets/${remove.dataset.deleteAsset}`);
    }
  });

  const trend = $("#security-trend-data");
  if (trend && window.Chart) {
    const weeks = JSON.parse(trend.textContent);
    new window.Chart($("#security-trend"), {
      data: {
        labels: weeks.map((w) => w.week_start.slice(0, 10)),
        datasets: [
          { type: "bar", label: "opened", data: weeks.map((w) => w.opened), backgroundColor: "#ef9a9a" },
          { type: "bar", label: "fixed", data: weeks.map((w) => w.fixed), backgroundColor: "#a5d6a7" },
          { type: "line", label: "open at week's end", data: weeks.map((w) => w.open_at_end), borderColor: "#c62828", backgroundColor: "#c62828" },
        ],
      },
      options: { animation: false, responsive: true, scales: { y: { beginAtZero: true } } },
    });
  }
})();
