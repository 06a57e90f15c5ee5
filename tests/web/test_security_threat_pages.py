"""The ATT&CK matrix and the fuzzing page in a real browser: a libFuzzer run imported
from its log files, and the matrix coloured by the team's tagged findings and incidents;
and a viewer's limits."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from tests.live import LiveServer
from tests.security.test_attack import incident, sigma_sarif
from tests.security.test_fuzzing import FUZZ, afl_body
from tests.web.conftest import PageFactory, screenshot
from tests.web.test_security_pages import team_with_asset


def asset_id(admin_api: httpx.Client, name: str) -> int:
    items = admin_api.get("/api/v1/secops/assets", params={"limit": 500}).json()["items"]
    [found] = [a["id"] for a in items if a["name"] == name]
    return int(found)


def test_fuzzing_import_and_attack_matrix(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    user, asset_name = team_with_asset(admin_api, "operator")
    page = new_page(username=user["username"], password=user["password"])
    page.goto(f"{live.base}/security/fuzzing")
    page.locator("summary", has_text="Import a run").click()
    form = page.locator("#fuzzing-import")
    form.get_by_label("Asset").select_option(label=asset_name)
    form.get_by_label("Target").fill("parse_record")
    form.get_by_label("Output").set_input_files(
        [str(FUZZ / "libfuzzer-heap-overflow.log"), str(FUZZ / "libfuzzer-segv.log")]
    )
    form.get_by_role("button", name="Import").click()
    row = page.locator("#fuzzing-campaigns tbody tr", has_text="parse_record")
    expect(row.locator(".crashes")).to_contain_text("2 / 2")
    expect(row).to_contain_text("40,176")  # 69 + 40107 executions
    row.locator("summary", has_text="Crashes").click()
    expect(row).to_contain_text("heap-buffer-overflow")

    # Findings tagged by a Sigma SARIF report and an incident, all of this team.
    target = asset_id(admin_api, asset_name)
    r = admin_api.post(
        "/api/v1/security/imports",
        data={"asset_id": str(target)},
        files={"file": ("sigma.sarif", sigma_sarif(), "application/json")},
    )
    assert r.status_code == 201, r.text
    team_id = admin_api.get(f"/api/v1/secops/assets/{target}").json()["team_id"]
    made = admin_api.post(
        "/api/v1/infra/incidents",
        json=incident("attack-ui", attack_techniques=["T1486"], team_id=team_id),
    )
    assert made.status_code == 201, made.text

    page.goto(f"{live.base}/security/attack")
    matrix = page.locator("#attack-matrix")
    expect(matrix.locator("thead th")).to_have_count(14)
    # findings/incidents/policies. T1059: two findings (T1059.001 and T1059), no incident
    # and no policy; T1486: the incident, and the built-in policy on unencrypted backups.
    execution = matrix.locator("td[data-tactic=execution] [data-technique=T1059]")
    expect(execution).to_have_class("cell heat-1")
    expect(execution.locator(".refs")).to_have_text("2/0/0")
    impact = matrix.locator("td[data-tactic=impact] [data-technique=T1486]")
    expect(impact.locator(".refs")).to_have_text("0/1/1")
    expect(matrix.locator("[data-technique=T1001]").first).to_have_class("cell heat-0")
    # The 3 cells named above, and those the built-in policies name.
    expect(page.locator("#attack-summary")).to_contain_text("22 of 250 technique cells")
    screenshot(page, "security_attack")


def test_a_viewer_reads_fuzzing_results_but_imports_nothing(
    new_page: PageFactory, live: LiveServer, admin_api: httpx.Client
) -> None:
    viewer, asset_name = team_with_asset(admin_api, "viewer")
    target = asset_id(admin_api, asset_name)
    r = admin_api.post("/api/v1/security/fuzzing-results", json=afl_body(target))
    assert r.status_code == 201, r.text
    page = new_page(username=viewer["username"], password=viewer["password"])
    page.goto(f"{live.base}/security/fuzzing")
    expect(page.locator("#fuzzing-campaigns tr", has_text="AFL++")).to_contain_text("2 / 2")
    expect(page.locator("#fuzzing-import")).to_have_count(0)
    status = page.evaluate(
        """async (body) => {
            const csrf = document.cookie.match(/csrf_token=([^;]*)/)[1];
            const r = await fetch("/api/v1/security/fuzzing-results", {
                method: "POST",
                headers: {"X-CSRF-Token": csrf, "Content-Type": "application/json"},
                body: JSON.stringify(body),
            });
            return [r.status, (await r.json()).code];
        }""",
        afl_body(target),
    )
    assert status == [403, "FORBIDDEN"]
    listed = admin_api.get("/api/v1/security/fuzzing-results", params={"asset_id": target}).json()
    assert listed["total"] == 1
    page.goto(f"{live.base}/security/attack")
    expect(page.locator("#attack-matrix thead th")).to_have_count(14)
