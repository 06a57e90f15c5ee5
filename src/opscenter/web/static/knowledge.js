// The knowledge base pages: helpful votes, live notice of newer versions, and the editor's
// live preview and save. Calls go through the shell's API helper (window.opscenter.api).
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const { api, toast } = window.opscenter;
  const list = (value) => value.split(",").map((s) => s.trim()).filter(Boolean);

  const article = $("#kb-article");
  if (article) {
    const id = Number(article.dataset.articleId);
    document.addEventListener("click", async (event) => {
      const button = event.target instanceof Element ? event.target.closest("[data-kb-vote]") : null;
      if (!button) return;
      const helpful = button.dataset.kbVote === "true";
      try {
        const result = await api("POST", `/api/v1/knowledge-base/articles/${id}/helpful`, { helpful });
        $("#kb-yes").textContent = result.helpful_yes;
        $("#kb-no").textContent = result.helpful_no;
        for (const b of document.querySelectorAll("[data-kb-vote]")) {
          const mine = (b.dataset.kbVote === "true") === helpful;
          b.setAttribute("aria-pressed", String(mine));
          b.classList.toggle("secondary", !mine);
        }
        toast("Thanks, your vote is counted", "ok");
      } catch (err) {
        toast(err.message, "error");
      }
    });
    document.addEventListener("opscenter:event", (event) => {
      const msg = event.detail;
      if (msg.type !== "knowledge" || Number(msg.data.article_id) !== id) return;
      if (msg.action === "feedback") {
        $("#kb-yes").textContent = msg.data.helpful_yes;
        $("#kb-no").textContent = msg.data.helpful_no;
      } else if (msg.action === "article_updated" && msg.data.version > Number(article.dataset.version)) {
        const stale = $("#kb-stale");
        stale.innerHTML = `Version ${Number(msg.data.version)} was saved meanwhile. <a href="">Reload</a> to read it.`;
        stale.hidden = false;
      }
    });
  }

  const editor = $("#kb-editor");
  if (editor) {
    const input = $("#kb-content-input");
    let timer = null;
    let asked = 0;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const ask = ++asked;
        if (!input.value.trim()) return;
        try {
          const result = await api("POST", "/api/v1/knowledge-base/preview", { content: input.value });
          // The server renders with raw HTML off and sanitizes: the same HTML a save shows.
          if (ask === asked) $("#kb-preview").innerHTML = result.content_html;
        } catch (err) {
          $("#kb-preview").textContent = err.message;
        }
      }, 250);
    });
    editor.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = editor.elements;
      const links = {
        error_codes: list(f.error_codes.value),
        pages: list(f.pages.value),
        events: list(f.events.value),
        runbook_ids: list(f.runbook_ids.value).map(Number),
        incident_ids: list(f.incident_ids.value).map(Number),
      };
      const body = {
        title: f.title.value.trim(),
        category: f.category.value.trim(),
        status: f.status.value,
        summary: f.summary.value.trim(),
        tags: list(f.tags.value),
        content: f.content.value,
        links,
        note: f.note.value.trim(),
      };
      const id = editor.dataset.articleId;
      const error = $("#kb-error");
      error.hidden = true;
      try {
        const saved = id
          ? await api("PUT", `/api/v1/knowledge-base/articles/${id}`, { ...body, expected_version: Number(editor.dataset.version) })
          : await api("POST", "/api/v1/knowledge-base/articles", body);
        window.location.assign(`/knowledge/${saved.id}`);
      } catch (err) {
        error.textContent = err.message;
        error.hidden = false;
      }
    });
  }

  document.addEventListener("opscenter:event", (event) => {
    const msg = event.detail;
    if (msg.type === "knowledge" && msg.action === "article_created" && $("#kb-articles")) {
      toast(`New article: ${msg.data.title}`, "info");
    }
  });
})();
