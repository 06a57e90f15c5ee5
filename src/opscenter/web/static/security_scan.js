// Scans and policies: start a scan, save the surface allow-list, enable, disable and edit
// policies. Every change goes through the API; the page reloads to show the result.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const show = (form, message) => {
    const box = $(".error", form);
    box.textContent = message;
    box.hidden = false;
  };

  async function call(form, method, url, payload, done) {
    try {
      const answer = await window.opscenter.api(method, url, payload);
      if (done) done(answer);
      window.location.reload();
    } catch (err) {
      if (form) show(form, err.message);
      else window.opscenter.toast(err.message, "error");
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.id === "scan-form") {
      event.preventDefault();
      const ids = [...form.elements.asset_ids.selectedOptions].map((o) => Number(o.value));
      const body = { scope: form.elements.scope.value };
      if (ids.length) body.asset_ids = ids;
      if (form.elements.team_id) body.team_id = Number(form.elements.team_id.value);
      call(form, "POST", "/api/v1/security/scan", body, (a) =>
        window.opscenter.toast(`Scan ${a.id} started`, "ok"));
    } else if (form.id === "allow-form") {
      event.preventDefault();
      const entries = form.elements.entries.value.split("\n").map((l) => l.trim()).filter(Boolean);
      call(form, "PUT", "/api/v1/security/surface-allowlist", { entries });
    } else if (form.classList.contains("policy-edit")) {
      event.preventDefault();
      let parameters;
      try {
        parameters = JSON.parse(form.elements.parameters.value || "{}");
      } catch (_) {
        show(form, "Parameters must be a JSON object");
        return;
      }
      call(form, "PUT", `/api/v1/security/policies/${form.dataset.policy}`, {
        severity: form.elements.severity.value,
        parameters,
      });
    }
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-toggle-policy]");
    if (!button) return;
    call(null, "PUT", `/api/v1/security/policies/${button.dataset.togglePolicy}`, {
      enabled: button.dataset.enabled !== "true",
    });
  });
})();
