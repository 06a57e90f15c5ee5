// Compliance pages: add and delete evidence, generate a report for the shown period.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const show = (form, message) => {
    const box = $(".error", form);
    box.textContent = message;
    box.hidden = false;
  };

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
    if (form.id === "evidence-form") {
      event.preventDefault();
      const data = new FormData(form);
      const payload = {
        title: data.get("title"),
        control_ids: data.getAll("control_ids"),
        effective_from: `${data.get("effective_from")}T00:00:00Z`,
        effective_to: `${data.get("effective_to")}T23:59:59Z`,
        description: data.get("description") || "",
      };
      if (data.get("link")) payload.link = data.get("link");
      call(form, "POST", "/api/v1/audit/evidence", payload);
    } else if (form.id === "report-form") {
      event.preventDefault();
      const data = new FormData(form);
      call(form, "POST", "/api/v1/audit/reports/generate", {
        framework: form.dataset.framework,
        period_start: `${data.get("start")}T00:00:00Z`,
        period_end: `${data.get("end")}T23:59:59.999999Z`,
      });
    }
  });
  document.addEventListener("click", (event) => {
    const remove = event.target.closest && event.target.closest("[data-delete-evidence]");
    if (remove && window.confirm("Delete this evidence? Reports already generated keep it.")) {
      call(null, "DELETE", `/api/v1/audit/evidence/${remove.dataset.deleteEvidence}`);
    }
  });
})();
