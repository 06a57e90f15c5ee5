// Fuzzing page: a run's output files read in the browser and sent as JSON
// (POST /api/v1/security/fuzzing-results).
"use strict";
(() => {
  const isAflCrash = (name) => /^id:\d{6},/.test(name);

  async function importRun(form) {
    const data = new FormData(form);
    const files = [...form.querySelector("input[type=file]").files];
    const engine = String(data.get("engine"));
    const body = {
      asset_id: Number(data.get("asset_id")),
      target: String(data.get("target")),
      engine,
      create_findings: data.get("create_findings") !== null,
    };
    if (engine === "libfuzzer") {
      body.logs = await Promise.all(files.map((f) => f.text()));
    } else {
      const stats = files.find((f) => f.name === "fuzzer_stats");
      body.fuzzer_stats = stats ? await stats.text() : "";
      // A crash file's sanitizer report, when given, is named after it with .log.
      const reports = new Map(files.filter((f) => f.name.endsWith(".log")).map((f) => [f.name.slice(0, -4), f]));
      body.crash_files = await Promise.all(
        files.filter((f) => isAflCrash(f.name) && !f.name.endsWith(".log")).map(async (f) => ({
          file: f.name,
          output: reports.has(f.name) ? await reports.get(f.name).text() : "",
        })),
      );
    }
    try {
      const run = await window.opscenter.api("POST", "/api/v1/security/fuzzing-results", body);
      window.opscenter.toast(`Imported: ${run.crashes_unique} distinct crashes of ${run.crashes_total}`, "ok");
      window.location.reload();
    } catch (err) {
      const box = form.querySelector(".error");
      box.textContent = err.message;
      box.hidden = false;
    }
  }

  document.addEventListener("submit", (event) => {
    if (event.target.id === "fuzzing-import") {
      event.preventDefault();
      importRun(event.target);
    }
  });
})();
