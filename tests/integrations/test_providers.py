"""Each integration type against a local server speaking its protocol: Slack, Teams, Jira
(one issue per alert key), GitHub Actions, GitLab CI and Jenkins triggers."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import httpx
from tests.conftest import Api
from tests.integrations.helpers import BASE, create, publish, settled, wait_deliveries
from tests.integrations.receiver import Receiver


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_slack_and_teams_messages(iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver) -> None:
    slack_url = f"{rx.url}/slack/T000/B000/XXXXSECRET"
    slack = await create(iadmin, "slack", {"events": ["backup.failed"]}, {"webhook_url": slack_url})
    teams = await create(
        iadmin, "teams", {"events": ["backup.failed"]}, {"webhook_url": f"{rx.url}/teams/wf"}
    )
    assert slack["credential_fields"] == ["webhook_url"] and slack["signing_secret"] is None
    assert "XXXXSECRET" not in str(slack)
    publish(iapi, "backup.failed", {"backup_id": 5, "error_code": "dump_killed"})
    (message,) = await rx.wait_for("/slack/T000/B000/XXXXSECRET", 1)
    text = message.json()["text"]
    assert text.startswith("[error] backup.failed") and "dump_killed" in text
    (card,) = await rx.wait_for("/teams/wf", 1)
    attachment = card.json()["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["body"][0]["text"] == "error: backup.failed"
    for integration in (slack, teams):
        (d,) = await wait_deliveries(iadmin, integration["id"], settled(1))
        assert d["status"] == "succeeded"


async def test_jira_one_issue_per_alert_key(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    jira = await create(
        iadmin,
        "jira",
        {
            "base_url": rx.url,
            "project_key": "OPS",
            "username": "bot@example.com",
            "recovery_transition_id": "31",
            "events": ["external_job.*", "server.health_changed"],
        },
        {"api_token": "jira-token-123"},
    )
    overdue = {"external_job_id": 4, "job_name": "nightly-sql"}
    publish(iapi, "external_job.overdue", overdue)
    publish(iapi, "external_job.overdue", overdue)  # repeat: a comment, not a new issue
    publish(iapi, "server.health_changed", {"server_id": 2, "health_status": "unreachable"})
    publish(iapi, "external_job.recovered", overdue)
    await wait_deliveries(iadmin, jira["id"], settled(4))

    issues = rx.on("/rest/api/2/issue")
    assert len(issues) == 2  # one per alert key
    fields = issues[0].json()["fields"]
    assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Bug"}
    assert "external_job.overdue" in fields["summary"]
    assert issues[0].headers["authorization"] == basic("bot@example.com", "jira-token-123")
    comments = rx.on("/rest/api/2/issue/OPS-1/comment")
    assert [c.json()["body"].split(":")[0] for c in comments] == ["Again", "Recovered"]
    (transition,) = rx.on("/rest/api/2/issue/OPS-1/transitions")
    assert transition.json() == {"transition": {"id": "31"}}
    assert rx.on("/rest/api/2/issue/OPS-2/comment") == []  # the server is still down

    # After recovery the key is free again: the next problem opens a new issue.
    publish(iapi, "external_job.overdue", overdue)
    await wait_deliveries(iadmin, jira["id"], settled(5))
    assert len(rx.on("/rest/api/2/issue")) == 3

    r = await iadmin.post(f"{BASE}/{jira['id']}/test")
    assert r.json()["success"], r.text
    assert rx.on("/rest/api/2/myself")[0].headers["authorization"].startswith("Basic ")


async def test_ci_pipelines_are_triggered(
    iapi: Api, iadmin: httpx.AsyncClient, rx: Receiver
) -> None:
    github = await create(
        iadmin,
        "github_actions",
        {
            "base_url": f"{rx.url}/api/v3",
            "owner": "acme",
            "repo": "db",
            "workflow_id": "restore-check.yml",
            "ref": "release",
            "inputs": {"environment": "staging"},
            "events": ["job.succeeded"],
        },
        {"token": "ghp_secret_value"},
    )
    gitlab = await create(
        iadmin,
        "gitlab_ci",
        {"base_url": rx.url, "project_id": "group/app", "events": ["job.succeeded"]},
        {"trigger_token": "glptt-secret"},
    )
    jenkins = await create(
        iadmin,
        "jenkins",
        {
            "base_url": rx.url,
            "job_name": "team/staging-smoke",
            "username": "ci",
            "parameters": {"TARGET": "staging"},
            "events": ["job.succeeded"],
        },
        {"api_token": "jenkins-token"},
    )
    publish(iapi, "job.succeeded", {"job_id": 12, "kind": "restore"})
    for integration in (github, gitlab, jenkins):
        (d,) = await wait_deliveries(iadmin, integration["id"], settled(1))
        assert d["status"] == "succeeded", d

    (dispatch,) = rx.on("/api/v3/repos/acme/db/actions/workflows/restore-check.yml/dispatches")
    assert dispatch.headers["authorization"] == "Bearer ghp_secret_value"
    assert dispatch.headers["x-github-api-version"] == "2022-11-28"
    assert dispatch.json() == {
        "ref": "release",
        "inputs": {"environment": "staging", "opscenter_event": "job.succeeded"},
    }

    (trigger,) = rx.on("/api/v4/projects/group%2Fapp/trigger/pipeline")
    form = parse_qs(trigger.body.decode())
    assert form["token"] == ["glptt-secret"] and form["ref"] == ["main"]
    assert form["variables[OPSCENTER_EVENT]"] == ["job.succeeded"]
    assert form["variables[OPSCENTER_JOB_ID]"] == ["12"]

    (build,) = rx.on("/job/team/job/staging-smoke/buildWithParameters")
    assert build.method == "POST"
    assert build.headers["authorization"] == basic("ci", "jenkins-token")
    params = parse_qs(urlsplit(build.path).query)
    assert params["TARGET"] == ["staging"] and params["OPSCENTER_EVENT"] == ["job.succeeded"]
