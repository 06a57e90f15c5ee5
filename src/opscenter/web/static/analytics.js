// Analytics: the daily backups chart (page and dashboard panel) and the report builder.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);

  function drawDaily() {
    const source = $("#analytics-daily-data");
    const canvas = $("#analytics-daily");
    if (!source || !canvas || !window.Chart || canvas.dataset.drawn) return;
    canvas.dataset.drawn = "1";
    const days = JSON.parse(source.textContent);
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: days.map((d) => d.day),
        datasets: [
          { label: "completed", data: days.map((d) => d.completed), backgroundColor: "#a5d6a7" },
          { label: "failed", data: days.map((d) => d.failed), backgroundColor: "#ef9a9a" },
        ],
      },
      options: { animation: false, responsive: true, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    });
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (form.id !== "report-form") return;
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      name: data.get("name"),
      group_by: data.get("group_by"),
      window: data.get("window"),
      metrics: data.getAll("metrics"),
      timezone: data.get("timezone") || "UTC",
    };
    if (data.get("schedule")) body.schedule = data.get("schedule");
    if (data.get("database_name")) body.filters = { database_name: data.get("database_name") };
    try {
      await window.opscenter.api("POST", "/api/v1/analytics/reports", body);
      window.location.reload();
    } catch (err) {
      const box = $(".error", form);
      box.textContent = err.message;
      box.hidden = false;
    }
  });

  window.addEventListener("load", drawDaily);
})();
