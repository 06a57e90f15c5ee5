from tests.conftest import Api


async def test_health(api: Api) -> None:
    async with api.client() as c:
        r = await c.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and body["checks"]["database"] is True


async def test_admin_creates_operator_and_key_and_sees_both_in_audit(api: Api, admin) -> None:
    r = await admin.post(
        "/api/v1/users",
        json={
            "username": f"op-{api.backend}",
            "email": f"op-{api.backend}@example.com",
            "password": "operator-password",
            "role": "operator",
        },
    )
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    r = await admin.post("/api/v1/admin/tokens", json={"name": "ci pipeline", "role": "operator"})
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["key"].startswith("ock_") and key["prefix"] == key["key"][:12]
    r = await admin.get("/api/v1/audit/logs", params={"limit": 50})
    actions = {(i["action"], i["resource_id"]) for i in r.json()["items"]}
    assert ("user.create", str(user_id)) in actions
    assert ("token.create", str(key["id"])) in actions
