"""The native stack test's checks through nginx (scripts/stack/test.sh runs it after each boot).

  stack-check.py routes            nginx's routes and their basic auth
  stack-check.py first STATE       admin login, #fleet-ops with the agent, !ping, a streamed answer;
                                   writes what a second boot must keep to STATE
  stack-check.py ping              !ping in #fleet-ops answered (after a kill -9, a reboot)
  stack-check.py second STATE      the same rooms, messages, users and room count as STATE says

Reads ports from the environment and passwords from $CONCLAVE_ROOT/config/generated-secrets.env;
prints no secret. Every request has a timeout, every wait a deadline. Exit 1 on the first failure."""

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.environ["CONCLAVE_ROOT"]
NGINX = f"http://127.0.0.1:{os.environ['NGINX_PORT']}"
SYNAPSE = f"http://127.0.0.1:{os.environ['SYNAPSE_PORT']}"
SERVER = os.environ.get("MATRIX_SERVER_NAME", "conclave.local")
AGENT = f"@{os.environ.get('CONCLAVE_AGENT_USER', 'agent')}:{SERVER}"
ROOMS = ["fleet-ops", "fleet-intel", "fleet-social", "fleet-alerts"]


def secret(name):
    with open(f"{ROOT}/config/generated-secrets.env", encoding="utf-8") as f:
        for line in f:
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip()
    fail(f"no {name} in generated-secrets.env")


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def ok(message):
    print(f"ok: {message}", flush=True)


def http(method, url, body=None, token=None, basic=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if basic:
        req.add_header("Authorization", "Basic " + base64.b64encode(basic.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            data = r.read()
            return r.status, data
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        return 0, str(e).encode()


def as_json(data):
    try:
        return json.loads(data)
    except ValueError:
        return {}


def expect(what, status, want):
    if status != want:
        fail(f"{what}: HTTP {status}, want {want}")
    ok(f"{what}: {status}")


def wait(what, seconds, probe):
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            fail(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.5)


def routes():
    auth = f"{os.environ.get('NGINX_USER', 'admin')}:{secret('NGINX_PASSWORD')}"
    expect("/_matrix/client/versions", http("GET", NGINX + "/_matrix/client/versions")[0], 200)
    expect("dashboard without credentials", http("GET", NGINX + "/")[0], 401)
    expect("dashboard with a wrong password", http("GET", NGINX + "/", basic="admin:wrong")[0], 401)
    status, page = http("GET", NGINX + "/", basic=auth)
    expect("dashboard with credentials", status, 200)
    if b"<title>Conclave</title>" not in page:
        fail("the dashboard is not the Conclave page")
    status, services = http("GET", NGINX + "/services.json", basic=auth)
    expect("/services.json with credentials", status, 200)
    if not as_json(services).get("services"):
        fail("/services.json lists no services")
    for path in ["/chromadb/api/v2/heartbeat", "/ollama/api/tags", "/chromadb-admin/", "/terminal/", "/conclave/ready"]:
        expect(f"{path} without credentials", http("GET", NGINX + path)[0], 401)
    expect("/chromadb/api/v2/heartbeat with credentials", http("GET", NGINX + "/chromadb/api/v2/heartbeat", basic=auth)[0], 200)
    expect("/ollama/api/tags with credentials (the fake chat server in Ollama's place)",
           http("GET", NGINX + "/ollama/api/tags", basic=auth)[0], 200)
    status, ready = http("GET", NGINX + "/conclave/ready", basic=auth)
    expect("/conclave/ready (the agent's /ready) with credentials", status, 200)
    if as_json(ready).get("status") != "ready":
        fail(f"the agent is not ready: {ready[:200]!r}")
    status, wk = http("GET", NGINX + "/.well-known/matrix/client")
    expect("/.well-known/matrix/client", status, 200)
    if "m.homeserver" not in as_json(wk):
        fail("/.well-known/matrix/client has no m.homeserver")
    expect("/_synapse/admin/ is not served through nginx", http("GET", NGINX + "/_synapse/admin/v1/server_version")[0], 404)


class Matrix:
    def __init__(self):
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "admin"},
                "password": secret("ADMIN_MATRIX_PASSWORD")}
        status, data = http("POST", NGINX + "/_matrix/client/v3/login", body)
        expect("login as @admin with the generated password", status, 200)
        self.token = as_json(data)["access_token"]
        self.user = as_json(data)["user_id"]
        self.txn = int(time.time() * 1000)

    def call(self, method, path, body=None, base=NGINX + "/_matrix/client/v3"):
        status, data = http(method, base + path, body, token=self.token)
        return status, as_json(data)

    def room(self, alias):
        status, data = self.call("GET", "/directory/room/" + urllib.parse.quote(f"#{alias}:{SERVER}", safe=""))
        if status != 200:
            fail(f"#{alias}:{SERVER} does not resolve: {status} {data}")
        return data["room_id"]

    def join(self, room):
        status, data = self.call("POST", "/join/" + urllib.parse.quote(room, safe=""), {})
        if status != 200:
            fail(f"@admin cannot join {room}: {status} {data}")

    def membership(self, room, user):
        q = urllib.parse.quote
        status, data = self.call("GET", f"/rooms/{q(room, safe='')}/state/m.room.member/{q(user, safe='')}")
        return data.get("membership") if status == 200 else None

    def send(self, room, content):
        self.txn += 1
        path = f"/rooms/{urllib.parse.quote(room, safe='')}/send/m.room.message/stack{self.txn}"
        status, data = self.call("PUT", path, content)
        if status != 200:
            fail(f"sending to {room}: {status} {data}")
        return data["event_id"]

    def timeline(self, room):
        status, data = self.call("GET", f"/rooms/{urllib.parse.quote(room, safe='')}/messages?dir=b&limit=200")
        return list(reversed(data.get("chunk", []))) if status == 200 else []

    def replies(self, room, event_id):
        return [e for e in self.timeline(room) if e.get("sender") == AGENT
                and e.get("content", {}).get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == event_id]

    def ping(self, room, seconds=60):
        event = self.send(room, {"msgtype": "m.text", "body": "!ping"})
        reply = wait("the agent's pong", seconds, lambda: next(iter(self.replies(room, event)), None))
        if "pong" not in reply["content"].get("body", ""):
            fail(f"!ping answered without pong: {reply['content'].get('body')!r}")
        ok("!ping → pong")
        return event

    def joined_rooms(self):
        return sorted(self.call("GET", "/joined_rooms")[1].get("joined_rooms", []))

    def user_count(self):
        status, data = self.call("GET", "/users?limit=1000", base=SYNAPSE + "/_synapse/admin/v2")
        if status != 200:
            fail(f"the admin API's user list: {status}")
        return data.get("total")


def fleet(m):
    rooms = {}
    for alias in ROOMS:
        room = m.room(alias)
        if m.membership(room, m.user) != "join":
            m.join(room)
        if m.membership(room, AGENT) != "join":
            fail(f"the agent is not in #{alias}")
        rooms[alias] = room
    ok(f"#fleet-ops and the other fleet rooms exist with {AGENT} in them; @admin joined")
    return rooms


def first(state_path):
    m = Matrix()
    rooms = fleet(m)
    ops = rooms["fleet-ops"]
    ping = m.ping(ops)
    question = "what is the plan for today?"
    mention = m.send(ops, {"msgtype": "m.text", "body": f"agent: {question}",
                           "m.mentions": {"user_ids": [AGENT]}})

    def answered():
        events = m.timeline(ops)
        reply = next((e for e in events if e.get("sender") == AGENT and e["content"].get("m.relates_to", {})
                      .get("m.in_reply_to", {}).get("event_id") == mention), None)
        if not reply:
            return None
        edits = [e for e in events if e.get("sender") == AGENT and e["content"].get("m.relates_to", {})
                 .get("rel_type") == "m.replace" and e["content"]["m.relates_to"].get("event_id") == reply["event_id"]]
        text = (edits[-1]["content"].get("m.new_content", {}) if edits else reply["content"]).get("body", "")
        return (reply, edits, text) if text.endswith("as the words arrive.") else None

    reply, edits, text = wait("the streamed answer to a mention", 90, answered)
    if "Stack answer:" not in text or question not in text:
        fail(f"the answer is not the model's: {text!r}")
    if not edits:
        fail("the answer arrived in one piece: no m.replace edits, so it was not streamed")
    ok(f"a mention → a streamed answer ({len(edits)} edit(s) as the words arrived)")
    state = {"rooms": rooms, "events": [ping, mention, reply["event_id"]], "joined": m.joined_rooms(),
             "users": m.user_count()}
    with open(state_path, "w", encoding="utf-8") as f:
        json.dump(state, f)
    ok(f"{len(state['joined'])} rooms joined by @admin, {state['users']} users on the homeserver")


def second(state_path):
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
    m = Matrix()
    rooms = fleet(m)
    if rooms != state["rooms"]:
        fail(f"the fleet rooms changed: {state['rooms']} → {rooms}")
    ok("the same fleet rooms (by alias) as the first boot")
    ops = rooms["fleet-ops"]
    for event in state["events"]:
        status, _ = m.call("GET", f"/rooms/{urllib.parse.quote(ops, safe='')}/event/{urllib.parse.quote(event, safe='')}")
        if status != 200:
            fail(f"message {event} of the first boot is gone ({status})")
    ok("the first boot's messages are still there")
    if m.joined_rooms() != state["joined"]:
        fail(f"@admin's rooms changed: {state['joined']} → {m.joined_rooms()}")
    if m.user_count() != state["users"]:
        fail(f"users changed: {state['users']} → {m.user_count()} (a second admin?)")
    ok("no second admin, no second room")
    m.ping(ops)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "routes":
        routes()
    elif command == "first":
        first(sys.argv[2])
    elif command == "second":
        second(sys.argv[2])
    elif command == "ping":
        m = Matrix()
        m.ping(m.room("fleet-ops"), seconds=int(os.environ.get("PING_WAIT", "90")))
    else:
        fail(f"unknown command {command}")
