// Commands and runbooks pages: run forms with target preview, live output over the
// WebSocket (channels command:<id> and sop:<id>), the executions chart.
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const { api, toast } = window.opscenter;
  const escapeHtml = (text) =>
    String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  function selection(form) {
    const ids = $$("[name=server_ids] option", form).filter((o) => o.selected).map((o) => Number(o.value));
    return { server_ids: ids };
  }

  function runBody(form) {
    const body = selection(form);
    body.variables = {};
    for (const el of $$("[name^='var:']", form)) {
      if (el.value !== "") body.variables[el.name.slice(4)] = el.type === "number" ? Number(el.value) : el.value;
    }
    const confirm = $("[name=confirm]", form);
    if (confirm && confirm.value) body.confirm = confirm.value;
    return body;
  }

  async function preview(form) {
    const box = $(".target-preview", form);
    const result = await api("POST", `/api/v1/commands/${form.dataset.commandId}/targets`, selection(form));
    box.innerHTML = `<p>${result.total} server(s): ${result.items
      .map((s) => `${escapeHtml(s.name)} <span class="badge">${escapeHtml(s.environment)}</span>`)
      .join(", ")}</p>`;
    $(".confirm-production", form).hidden = !result.confirmation_required;
    return result;
  }

  function showError(form, err) {
    const box = $(".error", form);
    box.textContent = err.message;
    box.hidden = false;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target instanceof Element ? event.target.closest(".preview-targets") : null;
    if (!button) return;
    const form = button.closest("form");
    try {
      await preview(form);
    } catch (err) {
      showError(form, err);
    }
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.classList.contains("command-run")) {
      event.preventDefault();
      try {
        const targets = await preview(form);
        if (targets.confirmation_required && !$("[name=confirm]", form).value) {
          showError(form, new Error(`A production server is among the targets: type ${form.dataset.commandName} to run it there`));
          return;
        }
        const result = await api("POST", `/api/v1/commands/${form.dataset.commandId}/execute`, runBody(form));
        window.location.assign(`/commands/executions/${result.execution_id}`);
      } catch (err) {
        showError(form, err);
      }
    } else if (form.classList.contains("sop-step")) {
      event.preventDefault();
      const note = $("[name=note]", form);
      try {
        await api("POST", form.dataset.action, note && note.value ? { note: note.value } : {});
        window.location.reload();
      } catch (err) {
        showError(form, err);
      }
    } else if (form.id === "sop-form") {
      event.preventDefault();
      try {
        const body = {
          name: $("[name=name]", form).value,
          description: $("[name=description]", form).value,
          steps: JSON.parse($("[name=steps]", form).value),
          server_ids: $$("[name=server_ids] option", form).filter((o) => o.selected).map((o) => Number(o.value)),
        };
        const method = form.dataset.sopId ? "PUT" : "POST";
        const url = form.dataset.sopId ? `/api/v1/sops/${form.dataset.sopId}` : "/api/v1/sops";
        await api(method, url, body);
        window.location.reload();
      } catch (err) {
        showError(form, err instanceof SyntaxError ? new Error(`Steps: not valid JSON (${err.message})`) : err);
      }
    }
  });

  // Live: the output of an execution line by line; a runbook run's steps as they change.
  // What changed between rendering the page and subscribing is not lost: once
  // subscribed, the page asks for the record once and reloads if it moved on.
  function follow(channel, url, shown, onMessage) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "subscribe", channels: [channel] })));
    socket.addEventListener("message", async (message) => {
      const msg = JSON.parse(message.data);
      if (msg.type !== "subscribed") return onMessage(msg);
      document.body.dataset.follow = "on";
      const now = await api("GET", url);
      if (now.status !== shown) window.location.reload();
    });
  }

  const execution = $("#execution");
  if (execution && ["pending", "running"].includes(execution.dataset.status)) {
    const id = execution.dataset.executionId;
    follow(`command:${id}`, `/api/v1/commands/executions/${id}`, execution.dataset.status, (msg) => {
      const data = msg.data || {};
      if (msg.action === "progress" && data.result_status) {
        const badge = $(`[data-result-status="${data.result_id}"]`);
        if (badge) {
          badge.textContent = data.result_status;
          badge.className = `badge status-${data.result_status}`;
        }
      } else if (msg.action === "progress" && data.stream === "stdout") {
        const pre = $(`[data-output="${data.server_id}"]`);
        if (pre) pre.textContent += `${data.line}\n`;
      } else if (msg.action === "progress" && data.stream === "stderr") {
        const pre = $(`[data-errors="${data.server_id}"]`);
        const box = $(`[data-errors-box="${data.server_id}"]`);
        if (box) box.hidden = false;
        if (pre) pre.textContent += `${data.line}\n`;
      } else if (["completed", "failed", "timed_out", "cancelled"].includes(msg.action)) {
        toast(`Execution ${data.execution_id} ${msg.action}`, msg.action === "completed" ? "ok" : "error");
        setTimeout(() => window.location.reload(), 300);
      }
    });
  }

  const run = $("#sop-run");
  if (run && !["completed", "failed", "cancelled"].includes(run.dataset.status)) {
    const id = run.dataset.runId;
    follow(`sop:${id}`, `/api/v1/sops/executions/${id}`, run.dataset.status, (msg) => {
      if (msg.type === "sop") setTimeout(() => window.location.reload(), 200);
    });
  }

  const chart = $("#execution-chart");
  if (chart && window.Chart) {
    const counts = JSON.parse(chart.dataset.counts);
    const colors = { completed: "#66bb6a", failed: "#ef5350", timed_out: "#ffa726", cancelled: "#9e9e9e", running: "#42a5f5" };
    new window.Chart(chart, {
      type: "bar",
      data: {
        labels: ["recent executions"],
        datasets: Object.keys(counts).map((k) => ({ label: k, data: [counts[k]], backgroundColor: colors[k] })),
      },
      options: { indexAxis: "y", responsive: true, plugins: { legend: { position: "bottom" } }, scales: { x: { stacked: true }, y: { stacked: true } } },
    });
  }
})();
