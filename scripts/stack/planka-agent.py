"""create-users.sh's Planka step: logs in as Planka's admin (accepting the terms on the first
login, as Planka v2 asks), makes the agent's user if missing and prints a fresh API key for it
(stdout, alone). Follows the Planka API notes the agent's client follows; every request has a timeout."""

import json
import os
import sys
import urllib.error
import urllib.request

URL = os.environ["PLANKA_URL"].rstrip("/")
AGENT = os.environ.get("AGENT_USER", "agent")


def secret(name):
    with open(os.environ["SECRETS"], encoding="utf-8") as f:
        for line in f:
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip()
    sys.exit(f"planka-agent: no {name} in the secrets file")


def call(method, path, body=None, token=None):
    req = urllib.request.Request(URL + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def login(user, password):
    status, body = call("POST", "/api/access-tokens", {"emailOrUsername": user, "password": password})
    if status == 403 and body.get("step") == "accept-terms":
        _, terms = call("GET", "/api/terms")
        status, body = call("POST", "/api/access-tokens/accept-terms",
                            {"pendingToken": body["pendingToken"], "signature": terms["item"]["signature"]})
    if status != 200:
        sys.exit(f"planka-agent: admin login refused ({status} {body.get('code', '')})")
    return body["item"]


token = login("admin", secret("PLANKA_ADMIN_PASSWORD"))
_, users = call("GET", "/api/users", token=token)
agent = next((u for u in users.get("items", []) if u.get("username") == AGENT), None)
if agent is None:
    status, made = call("POST", "/api/users", {
        "email": f"{AGENT}@local", "password": secret("AGENT_PLANKA_PASSWORD"),
        "name": "Agent", "username": AGENT, "role": "projectOwner"}, token=token)
    if status != 200:
        sys.exit(f"planka-agent: creating the agent's user failed ({status} {made.get('code', '')})")
    agent = made["item"]
status, key = call("POST", f"/api/users/{agent['id']}/api-key", token=token)
if status != 200:
    sys.exit(f"planka-agent: creating the API key failed ({status})")
print(key["included"]["apiKey"])
