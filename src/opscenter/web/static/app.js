// The browser half of the web UI: every change is a call of the JSON API (with the
// X-CSRF-Token header of the cookie session); pages and partials come from the server.
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrf_token=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // The API's one error format, {detail, code}, in words: "what went wrong (CODE)".
  function describe(body, status) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) {
      detail = detail
        .map((d) => {
          const where = (d.loc || []).filter((part) => part !== "body").join(".");
          const msg = String(d.msg || "").replace(/^Value error, /, "");
          return where ? `${where}: ${msg}` : msg;
        })
        .join("; ");
    }
    const code = (body && body.code) || `HTTP_${status}`;
    return { code, text: `${detail || `The server answered ${status}`} (${code})` };
  }

  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
    const response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const { code, text } = describe(data, response.status);
      throw new ApiError(response.status, code, text);
    }
    return data;
  }

  const toasted = new Set();
  function toastOnce(key, text, kind) {
    if (key) {
      if (toasted.has(key)) return;
      toasted.add(key);
      setTimeout(() => toasted.delete(key), 60000);
    }
    toast(text, kind);
  }

  function toast(text, kind = "info") {
    const box = document.createElement("div");
    box.className = `toast ${kind}`;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.textContent = text;
    $("#toasts").appendChild(box);
    setTimeout(() => box.remove(), kind === "error" ? 15000 : 6000);
  }

  // An error's code links to its article in the knowledge base.
  function helpLink(code) {
    const link = document.createElement("a");
    link.href = `/knowledge/help?context=${encodeURIComponent(`error:${code}`)}`;
    link.textContent = `What does ${code} mean?`;
    link.className = "help-link";
    return link;
  }

  function showError(box, err) {
    const text = err instanceof ApiError ? err.message : `Unexpected error: ${err.message} (CLIENT_ERROR)`;
    if (box) {
      box.textContent = text;
      if (err instanceof ApiError && err.code) box.append(" ", helpLink(err.code));
      box.hidden = false;
      box.focus && box.setAttribute("tabindex", "-1");
    } else {
      toast(text, "error");
    }
  }

  function setPath(target, dotted, value) {
    const parts = dotted.split(".");
    let node = target;
    for (const part of parts.slice(0, -1)) node = node[part] = node[part] || {};
    node[parts[parts.length - 1]] = value;
  }

  // Form fields to a JSON body: empty fields are left out (the API's defaults apply)
  // unless data-empty="null" says empty means "clear it"; data-type says how to read a
  // value, dotted names nest, data-local fields stay here.
  function formBody(form) {
    const body = {};
    for (const el of form.elements) {
      // :disabled also covers the fields of a disabled fieldset (another channel type's).
      if (!el.name || el.matches(":disabled") || el.hasAttribute("data-local")) continue;
      const type = el.dataset.type;
      let value;
      if (el.type === "checkbox") {
        if (type !== "bool") continue;
        value = el.checked;
      } else if (el.multiple) {
        value = [...el.selectedOptions].map((o) => (type === "ints" ? Number.parseInt(o.value, 10) : o.value));
        if (!value.length) continue;
      } else {
        value = el.value.trim();
        if (value === "" && el.dataset.empty === "null") {
          setPath(body, el.name, null);
          continue;
        }
        if (value === "") continue;
        if (type === "int") value = Number.parseInt(value, 10);
        if (type === "lines") value = value.split("\n").map((s) => s.trim()).filter(Boolean);
        if (type === "json") value = JSON.parse(value);
      }
      setPath(body, el.name, value);
    }
    return body;
  }

  function out(el) {
    const sel = el && el.dataset && el.dataset.out;
    return sel ? $(sel) : null;
  }

  function escapeHtml(text) {
    const div = document.createElement("div");
    div.textContent = text == null ? "" : String(text);
    return div.innerHTML;
  }

  function fmtBytes(n) {
    if (n == null) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  let refreshTimer = null;
  function refreshBackups() {
    const rows = $("#backup-rows");
    if (!rows || !window.htmx) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => window.htmx.trigger(rows, "refresh"), 250);
  }

  async function followJob(jobId, box, label) {
    for (;;) {
      const job = await api("GET", `/api/v1/jobs/${jobId}`);
      const pct = job.progress != null ? ` ${job.progress.toFixed(0)} %` : "";
      box.innerHTML = `<p>${escapeHtml(label)} (job ${job.id}): <strong data-job-status>${escapeHtml(job.status)}</strong>${pct}
        ${job.phase ? ` <small>${escapeHtml(job.phase)}</small>` : ""}
        ${job.status === "running" || job.status === "queued" ? "<progress></progress>" : ""}</p>`;
      if (job.error_message) {
        box.innerHTML += `<p class="error-text" role="alert">${escapeHtml(job.error_message)} <code>${escapeHtml(job.error_code || "")}</code></p>`;
      }
      if (!["queued", "running"].includes(job.status)) return job;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  // What happens after a successful call, named by the element's data-then.
  const handlers = {
    reload: () => window.location.reload(),
    login: () => {
      const next = new URLSearchParams(window.location.search).get("next") || "/";
      // Only a path of this site: "//host" and "/\\host" would leave it.
      window.location.assign(/^\/(?![\/\\])/.test(next) ? next : "/");
    },
    backupQueued: (result) => {
      toast(`Backup ${result.id} queued (job ${result.job_id})`, "ok");
      if ($("#backup-rows")) refreshBackups();
      else window.location.assign("/backups");
    },
    refreshBackups: () => refreshBackups(),
    download: (result) => {
      const link = document.createElement("a");
      link.href = result.download_url;
      link.download = "";
      document.body.appendChild(link);
      link.click();
      link.remove();
    },
    connectionResult: (result, el) => {
      const box = out(el);
      const text = result.success
        ? `Connected in ${result.latency_ms} ms${result.version ? `: ${result.version}` : ""}`
        : `Connection failed: ${result.message} (${result.code || "CONNECTION_FAILED"})`;
      if (box) box.innerHTML = `<p class="${result.success ? "" : "error-text"}" role="status">${escapeHtml(text)}</p>`;
      toast(text, result.success ? "ok" : "error");
    },
    showResult: (result, el) => {
      const text = `${result.success ? "OK" : "Failed"}: ${result.message}${result.code ? ` (${result.code})` : ""}`;
      const box = out(el);
      if (box) box.innerHTML = `<p role="status">${escapeHtml(text)}</p>`;
    },
    showSpace: (result, el) => {
      const box = out(el);
      if (box) {
        box.innerHTML = `<p>Total ${fmtBytes(result.total_bytes)}, free ${fmtBytes(result.free_bytes)}; backups use ${fmtBytes(result.used_by_backups_bytes)} in ${result.object_count} objects.</p>`;
      }
    },
    retentionPreview: (result, el) => {
      const box = out(el);
      if (!box) return;
      const list = (items) => items.map((b) => `#${b.backup_id ?? b.id}`).join(", ") || "none";
      box.innerHTML = `<p>Would keep: ${escapeHtml(list(result.keep))}</p>
        <p><strong>Would delete: ${escapeHtml(list(result.delete))}</strong></p>`;
    },
    serverSaved: (result) => {
      const { server, test } = result;
      toast(`Server ${server.name} saved; connection ${test.success ? "OK" : `failed: ${test.message}`}`, test.success ? "ok" : "error");
      window.location.reload();
    },
    storageSaved: (result) => {
      const { saved, test } = result;
      toast(`Storage ${saved.name} saved; test write ${test.success ? "OK" : `failed: ${test.message}`}`, test.success ? "ok" : "error");
      window.location.reload();
    },
    showContents: (result, el) => {
      const box = out(el);
      if (!box) return;
      const rows = result.items
        .map((a) => `<tr data-key="${escapeHtml(a.key)}"><td><code class="path">${escapeHtml(a.key)}</code></td><td>${escapeHtml(a.engine)}</td>
          <td>${escapeHtml(a.database)}</td><td>${fmtBytes(a.size_bytes)}</td><td>${escapeHtml(a.created_at.slice(0, 19).replace("T", " "))}</td>
          <td>${a.encrypted ? "yes" : "no"}</td>
          <td>${a.in_catalog ? `<a href="/backups?database_name=${encodeURIComponent(a.database)}">backup ${a.backup_id}</a>` : '<span class="badge">not in catalog</span>'}</td></tr>`)
        .join("");
      const unknown = result.items.filter((a) => !a.in_catalog).length;
      const problems = result.invalid.length
        ? `<p class="error-text">${result.invalid.length} manifest(s) unreadable: ${result.invalid.map((i) => `${escapeHtml(i.key)} (${escapeHtml(i.reason)})`).join("; ")}</p>`
        : "";
      const orphans = result.orphans.length
        ? `<p class="muted">${result.orphans.length} object(s) without a manifest (unfinished or foreign): ${result.orphans.map(escapeHtml).join(", ")}</p>`
        : "";
      // data-import is there only for those who may write the catalog.
      const importButton = unknown && el.dataset.import
        ? `<button type="button" class="small" data-api-click="${escapeHtml(el.dataset.import)}" data-then="imported" data-out="${escapeHtml(el.dataset.out)}">Import ${unknown} into the catalog</button>`
        : "";
      box.innerHTML = `<p>${result.total} artifact(s) with a manifest${unknown ? `, ${unknown} not in the catalog` : ""}.</p>${importButton}
        ${rows ? `<div class="scroll"><table class="contents"><thead><tr><th>Key</th><th>Engine</th><th>Database</th><th>Size</th><th>Created (UTC)</th><th>Encrypted</th><th>Catalog</th></tr></thead><tbody>${rows}</tbody></table></div>` : ""}
        ${problems}${orphans}`;
    },
    imported: (result, el) => {
      const box = out(el);
      const text = `Imported ${result.imported} backup(s) into the catalog${result.invalid.length ? `; ${result.invalid.length} could not be read` : ""}`;
      if (box) box.innerHTML = `<p role="status" class="ok-text">${escapeHtml(text)}: <a href="/backups">see the backups</a></p>`;
      toast(text, result.invalid.length ? "error" : "ok");
    },
    restoreQueued: async (result) => {
      const box = $("#restore-result");
      const job = await followJob(result.job_id, box, `Restore of backup ${result.id}`);
      toast(`Restore ${job.status}`, job.status === "succeeded" ? "ok" : "error");
    },
    verificationQueued: async (result) => {
      toast(result.message, "ok");
      const job = await followJob(result.job_id, document.createElement("div"), "Verification");
      toast(`Verification ${job.status}${job.error_message ? `: ${job.error_message}` : ""}`, job.status === "succeeded" ? "ok" : "error");
      refreshBackups();
    },
    channelTested: (result, el) => {
      const box = out(el);
      const text = result.delivered
        ? "Delivered: the test message was sent"
        : `Not delivered: ${result.error || "no reason given"} (DELIVERY_FAILED)`;
      if (box) box.innerHTML = `<p class="${result.delivered ? "ok-text" : "error-text"}" role="status">${escapeHtml(text)}</p>`;
      toast(text, result.delivered ? "ok" : "error");
    },
    refreshInbox: () => refreshInbox(),
    verificationStarted: async (result, form) => {
      const box = $("#verify-progress", form);
      const job = await followJob(result.job_id, box, `Verification ${result.id}`);
      const backupId = $("[name=backup_id]", form).value;
      const ok = job.status === "succeeded";
      box.innerHTML += `<p role="status" class="${ok ? "ok-text" : "error-text"}">Verification ${escapeHtml(job.status)}: <a href="/verification/${encodeURIComponent(backupId)}/runs/${result.id}">see run ${result.id}</a></p>`;
      toast(`Verification ${job.status}`, ok ? "ok" : "error");
    },
    aiExplained: (result, el) => {
      const box = out(el);
      if (box) box.innerHTML = `<article class="ai-answer"><p><strong>Explained by ${escapeHtml(result.model_name)}</strong> <small>(${escapeHtml(result.provider)} / ${escapeHtml(result.model)})</small></p><pre class="ai-text">${escapeHtml(result.explanation)}</pre></article>`;
    },
    aiSummarized: (result, el) => {
      const box = out(el);
      if (box) box.innerHTML = `<article class="ai-answer"><p><strong>Summarized by ${escapeHtml(result.model_name)}</strong> <small>(${escapeHtml(result.provider)} / ${escapeHtml(result.model)}, ${result.timeline_entries} timeline entries)</small></p><pre class="ai-text">${escapeHtml(result.summary)}</pre></article>`;
    },
    tokenCreated: (result) => {
      $("#new-token").hidden = false;
      $("#new-token-key").textContent = result.key;
    },
  };

  // The server and storage forms: test the unsaved configuration first (the test routes
  // store nothing), save it only when the test passes or the user ticked "keep anyway".
  async function testThenSave(form, what, testCall, createUrl) {
    const body = formBody(form);
    const keep = $("[name=keep_on_failure]", form).checked;
    const status = $(".result", form);
    status.textContent = `Testing the ${what}…`;
    let test;
    try {
      test = await testCall(body);
    } finally {
      status.textContent = "";
    }
    if (!test.success && !keep) {
      const code = test.code || "CONNECTION_FAILED";
      throw new ApiError(502, code, `The test failed, so the ${what} was not kept: ${test.message} (${code})`);
    }
    status.textContent = "Saving…";
    try {
      return { saved: await api("POST", createUrl, body), test };
    } finally {
      status.textContent = "";
    }
  }

  // A server is tested once more when stored, so its health badge starts out known.
  async function saveServer(form) {
    const testCall = (body) => api("POST", "/api/v1/servers/test-connection", body);
    const { saved } = await testThenSave(form, "connection", testCall, "/api/v1/servers");
    return { server: saved, test: await api("POST", `/api/v1/servers/${saved.id}/test-connection`) };
  }

  async function saveStorage(form) {
    const testCall = (body) => api("POST", "/api/v1/storage/test", { provider: body });
    return testThenSave(form, "storage", testCall, "/api/v1/storage/providers");
  }

  function restoreBody(form, body) {
    const rules = {};
    for (const row of $$(".mask-row", form)) {
      const column = $(".mask-column", row).value.trim();
      if (!column) continue;
      let rule = $(".mask-rule", row).value;
      if (rule === "fixed:") rule = `fixed:${$(".mask-fixed", row).value}`;
      rules[column] = rule;
    }
    if (Object.keys(rules).length) {
      body.mask_sensitive_data = true;
      body.masking_rules = rules;
    }
    return body;
  }

  function restoreConfirmed(form, body) {
    const option = $("#restore-server").selectedOptions[0];
    const production = option && option.dataset.environment === "production";
    if (production && body.confirm !== body.target_database) {
      throw new ApiError(0, "CONFIRMATION_REQUIRED",
        `This is a production server: type the target database name (${body.target_database}) to confirm (CONFIRMATION_REQUIRED)`);
    }
    if (body.drop_existing) {
      return window.confirm(`Replace everything in ${body.target_database}? This cannot be undone.`);
    }
    return true;
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !(form.dataset.api || form.dataset.kind)) return;
    event.preventDefault();
    const errorBox = $(".error", form);
    if (errorBox) errorBox.hidden = true;
    const button = $("[type=submit]", form);
    if (button) {
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
    }
    try {
      let result;
      if (form.dataset.kind === "server") {
        result = await saveServer(form);
      } else if (form.dataset.kind === "storage") {
        result = await saveStorage(form);
      } else if (form.dataset.kind === "verify") {
        const backupId = Number.parseInt($("[name=backup_id]", form).value, 10);
        $("#verify-progress", form).innerHTML = "";
        result = await api("POST", `/api/v1/verify/${backupId}`, formBody(form));
      } else {
        const [method, url] = form.dataset.api.split(" ");
        let body = formBody(form);
        if (form.dataset.kind === "restore") {
          body = restoreBody(form, body);
          if (!restoreConfirmed(form, body)) return;
        }
        result = await api(method, url, body);
      }
      await handlers[form.dataset.then || "reload"](result, form);
    } catch (err) {
      showError(errorBox, err);
    } finally {
      if (button) {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    }
  });

  document.addEventListener("click", async (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const button = target.closest("[data-api-click]");
    if (button) {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      const [method, url] = button.dataset.apiClick.split(" ");
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      button.setAttribute("aria-busy", "true");
      try {
        await handlers[button.dataset.then || "reload"](await api(method, url, body), button);
      } catch (err) {
        const box = out(button);
        if (box) box.innerHTML = `<p class="error-text" role="alert">${escapeHtml(err.message)}</p>`;
        toast(err.message, "error");
      } finally {
        button.removeAttribute("aria-busy");
      }
      return;
    }
    const dbButton = target.closest("[data-databases]");
    if (dbButton) {
      const box = out(dbButton);
      box.textContent = "Asking the server…";
      try {
        const { databases } = await api("GET", `/api/v1/servers/${dbButton.dataset.databases}/databases`);
        box.innerHTML = databases.length
          ? `<table class="databases"><thead><tr><th>Database</th><th>Size</th><th>Type</th></tr></thead><tbody>${databases
              .map((d) => `<tr><td>${escapeHtml(d.name)}</td><td>${d.size_mb} MiB</td><td>${escapeHtml(d.type)}</td></tr>`)
              .join("")}</tbody></table>`
          : "<p>No databases found.</p>";
      } catch (err) {
        box.innerHTML = `<p class="error-text" role="alert">${escapeHtml(err.message)}</p>`;
      }
    }
    if (target.id === "menu-toggle") setMenu(target.getAttribute("aria-expanded") !== "true");
    if (target.id === "logout") {
      // Ends the local session; a single sign-on session goes on to the provider's logout.
      let next = "/login";
      try {
        const ended = await api("POST", "/api/v1/sso/logout");
        if (ended && ended.end_session_url) next = ended.end_session_url;
      } finally {
        window.location.assign(next);
      }
    }
    if (target.id === "add-mask") addMaskRow();
    if (target.classList.contains("mask-remove")) target.closest(".mask-row").remove();
    if (target.id === "copy-token") {
      const key = $("#new-token-key").textContent;
      try {
        await navigator.clipboard.writeText(key);
        toast("Copied", "ok");
      } catch (_) {
        window.getSelection().selectAllChildren($("#new-token-key"));
        toast("Press Ctrl+C to copy the selected key");
      }
    }
  });

  function addMaskRow() {
    const row = $("#masking-row").content.firstElementChild.cloneNode(true);
    $("#masking-rules").appendChild(row);
    $(".mask-column", row).focus();
  }

  document.addEventListener("change", (event) => {
    const el = event.target;
    if (el.classList && el.classList.contains("mask-rule")) {
      $(".mask-fixed", el.closest(".mask-row")).hidden = el.value !== "fixed:";
    }
    if (el.id === "restore-server") toggleConfirm();
    if (el.matches && el.matches("select[data-switch]")) switchFields(el);
    if (el.dataset && el.dataset.loadDatabases) loadDatabases(el);
  });

  // A form with a type switch shows (and sends) only the fieldsets of the chosen type.
  function switchFields(select) {
    for (const set of $$("fieldset[data-types]", select.form)) {
      const on = set.dataset.types.split(" ").includes(select.value);
      set.hidden = !on;
      set.disabled = !on;
    }
  }

  // The unread count in the nav (and on the notifications page), kept live.
  async function updateUnread() {
    const badge = $("#nav-unread");
    if (!badge) return;
    try {
      const { unread } = await api("GET", "/api/v1/notifications/unread-count");
      badge.innerHTML = `${unread}<span class="sr"> unread</span>`;
      badge.hidden = unread === 0;
      badge.dataset.unread = String(unread);
      const onPage = $("#inbox-unread");
      if (onPage) onPage.textContent = `${unread} unread`;
    } catch (_) {
      // The badge is a convenience; the page itself shows the notifications.
    }
  }

  let inboxTimer = null;
  function refreshInbox() {
    updateUnread();
    const inbox = $("#inbox");
    if (!inbox || !window.htmx) return;
    clearTimeout(inboxTimer);
    inboxTimer = setTimeout(() => window.htmx.trigger(inbox, "refresh"), 150);
  }

  function toggleConfirm() {
    const select = $("#restore-server");
    if (!select) return;
    const option = select.selectedOptions[0];
    const production = option && option.dataset.environment === "production";
    $("#confirm-label").hidden = !production;
    $("#restore-confirm").required = production;
  }

  async function loadDatabases(select) {
    const list = $(select.dataset.loadDatabases);
    list.innerHTML = "";
    try {
      const { databases } = await api("GET", `/api/v1/servers/${select.value}/databases`);
      for (const d of databases) {
        const option = document.createElement("option");
        option.value = d.name;
        list.appendChild(option);
      }
    } catch (_) {
      // Suggestions only: the database can still be typed.
    }
  }

  // Live updates: progress of running jobs, failures as toasts, health changes.
  function onEvent(msg) {
    if (msg.type === "sso") {
      const providers = $("#sso-providers");
      if (providers && window.htmx) window.htmx.trigger(providers, "refresh");
      return;
    }
    if (msg.type === "backup_progress") {
      const bar = $(`[data-backup-progress="${msg.backup_id}"]`);
      if (bar && msg.progress != null) {
        bar.max = 100;
        bar.value = msg.progress;
      }
      const bytes = $(`[data-backup-bytes="${msg.backup_id}"]`);
      if (bytes && msg.bytes_done != null) bytes.textContent = fmtBytes(msg.bytes_done);
      if (!bar || !["running", "in_progress", "queued"].includes(msg.status)) refreshBackups();
    } else if (msg.type === "backup") {
      if (msg.action === "completed") toast(`Backup ${msg.data.backup_id} completed`, "ok");
      refreshBackups();
    } else if (msg.type === "notification") {
      // A failed backup arrives twice: as the backup's own event and as the user's new
      // in-app notification. One toast per backup and level.
      const about = msg.details && msg.details.backup_id != null ? `backup:${msg.details.backup_id}:${msg.level}` : null;
      toastOnce(about, msg.message || (msg.data && msg.data.title) || "Notification", msg.level === "error" ? "error" : "info");
      refreshBackups();
      refreshInbox();
    } else if (msg.type === "server_health") {
      const badge = $(`[data-server-health="${msg.server_id}"]`);
      if (badge) {
        badge.textContent = msg.health_status;
        badge.className = `badge health-${msg.health_status}`;
      }
      toast(`Server ${msg.server_id} is now ${msg.health_status}`, msg.health_status === "healthy" ? "ok" : "error");
    }
  }

  function connectLive(delay = 1000) {
    if (!$("#current-user")) return;
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}/ws`);
    socket.addEventListener("open", () => {
      // Pages add the channels they show live with data-live-channel="name".
      const extra = $$("[data-live-channel]").map((el) => el.dataset.liveChannel);
      socket.send(JSON.stringify({ type: "subscribe", channels: ["backups", "servers", "notifications", "sso", ...extra] }));
    });
    socket.addEventListener("message", (message) => {
      const msg = JSON.parse(message.data);
      if (msg.type === "subscribed") document.body.dataset.live = "on";
      else {
        onEvent(msg);
        document.dispatchEvent(new CustomEvent("opscenter:event", { detail: msg }));
      }
    });
    socket.addEventListener("close", (event) => {
      document.body.dataset.live = "off";
      if (event.code !== 1008) setTimeout(() => connectLive(Math.min(delay * 2, 30000)), delay);
    });
  }

  function drawCharts() {
    const source = $("#chart-data");
    if (!source || !window.Chart) return;
    const charts = JSON.parse(source.textContent);
    for (const canvas of $$("canvas[data-chart]")) {
      const chart = charts[Number(canvas.dataset.chart)];
      // One unit per chart, picked by its largest backup, so small targets stay readable.
      const largest = Math.max(...chart.points.map((p) => p.size || 0));
      const [unit, scale] = largest >= 2 ** 30 ? ["GiB", 2 ** 30] : largest >= 2 ** 20 ? ["MiB", 2 ** 20] : ["KiB", 1024];
      new window.Chart(canvas, {
        type: "line",
        data: {
          labels: chart.points.map((p) => (p.at ? p.at.slice(0, 16).replace("T", " ") : "")),
          datasets: [
            { label: `size (${unit})`, data: chart.points.map((p) => (p.size || 0) / scale), yAxisID: "y", borderColor: "#1565c0", backgroundColor: "#1565c0" },
            { label: "duration (s)", data: chart.points.map((p) => p.duration), yAxisID: "y1", borderColor: "#b26a00", backgroundColor: "#b26a00" },
          ],
        },
        options: {
          animation: false,
          responsive: true,
          scales: {
            y: { position: "left", beginAtZero: true, title: { display: true, text: unit } },
            y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "seconds" } },
          },
        },
      });
    }
  }

  // Phone width: the sidebar hides behind the menu button; Escape closes it again.
  function setMenu(open) {
    $("#menu-toggle").setAttribute("aria-expanded", String(open));
    $("#sidebar").classList.toggle("open", open);
    if (open) $("#sidebar a")?.focus();
  }

  document.addEventListener("keydown", (event) => {
    const toggle = $("#menu-toggle");
    if (event.key === "Escape" && toggle?.getAttribute("aria-expanded") === "true") {
      setMenu(false);
      toggle.focus();
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    drawCharts();
    toggleConfirm();
    for (const select of $$("select[data-switch]")) switchFields(select);
    updateUnread();
    for (const select of $$("[data-load-databases]")) loadDatabases(select);
    connectLive();
  });

  window.opscenter = { api, toast };
})();
