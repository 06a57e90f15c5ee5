// The reports page: generate (a job), follow the job's progress, then show the new version.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = text == null ? "" : String(text);
    return div.innerHTML;
  }

  async function follow(jobId, box) {
    for (;;) {
      const job = await window.opscenter.api("GET", `/api/v1/jobs/${jobId}`);
      const pct = job.progress != null ? ` ${job.progress.toFixed(0)} %` : "";
      box.innerHTML = `<p>Report job ${job.id}: <strong data-job-status>${escapeHtml(job.status)}</strong>${pct}
        ${job.phase ? ` <small>${escapeHtml(job.phase)}</small>` : ""}
        ${["queued", "running"].includes(job.status) ? "<progress></progress>" : ""}</p>`;
      if (job.error_message) {
        box.innerHTML += `<p class="error-text" role="alert">${escapeHtml(job.error_message)} <code>${escapeHtml(job.error_code || "")}</code></p>`;
      }
      if (!["queued", "running"].includes(job.status)) return job;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (form.id !== "report-generate") return;
    event.preventDefault();
    const error = $(".error-text", form);
    error.hidden = true;
    const body = {};
    for (const [name, value] of new FormData(form)) {
      const text = String(value).trim();
      if (text) body[name] = name === "team_id" ? Number.parseInt(text, 10) : text;
    }
    const button = $("[type=submit]", form);
    button.disabled = true;
    try {
      const accepted = await window.opscenter.api("POST", "/api/v1/reports/generate", body);
      const job = await follow(accepted.job_id, $("#report-progress"));
      window.opscenter.toast(`Report ${job.status}`, job.status === "succeeded" ? "ok" : "error");
      if (job.status === "succeeded") window.location.reload();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
})();
