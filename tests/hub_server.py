"""A local stand-in for the Hugging Face Hub API: the endpoints `upload_to_hub.py` reaches.

The real `huggingface_hub` client (2.4) is pointed at it with `HF_ENDPOINT`. What one push calls:

    POST /api/repos/create                              create_repo (409 when it exists; exist_ok)
    POST /api/validate-yaml                             create_commit checks README.md's metadata
    POST /api/models/{repo}/preupload/{rev}             upload mode per file: "regular" or "lfs"
    POST /{repo}.git/info/lfs/objects/batch             LFS batch: where to PUT each LFS object
    PUT  /lfs-upload/{oid}                              the upload URL this server hands out
    POST /lfs-verify                                    the verify action this server hands out
    POST /api/models/{repo}/commit/{rev}                the commit, NDJSON (header + one line per file)
    GET  /api/models/{repo}                             repo_info (create_repo calls it after a 401/403)

LFS goes through the classic batch API only when hf_xet is disabled (`HF_HUB_DISABLE_XET=1`); with
hf_xet the client would talk to a Xet CAS server instead, which this stand-in does not speak.
Runs in a thread on 127.0.0.1 at a free port. `reject_token=True` answers 401 to everything.
"""

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".png")


class HubState:
    """Everything the server saw: requests, repos, LFS objects, commits."""

    def __init__(self, reject_token=False):
        self.reject_token = reject_token
        self.requests = []          # (method, path, authorization header)
        self.repos = {}             # repo_id -> create payload
        self.lfs_objects = {}       # sha256 hex -> bytes
        self.commits = []           # {"repo", "revision", "header", "files": {path: bytes}}
        self.lock = threading.Lock()


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState = None  # set per server by `serve`

    def log_message(self, *args):  # keep pytest output clean
        pass

    # -- plumbing ---------------------------------------------------------------------------------

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status, payload=None, headers=None):
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _base(self):
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"

    def _handle(self, method):
        body = self._body()
        path = unquote(urlparse(self.path).path)
        with self.state.lock:
            self.state.requests.append((method, path, self.headers.get("Authorization")))
        if self.state.reject_token:
            return self._send(401, {"error": "Invalid credentials in Authorization header"},
                              {"X-Error-Code": "InvalidCredentials"})
        for route in ROUTES:
            if route[0] == method and route[1](path):
                return route[2](self, path, body)
        return self._send(404, {"error": f"no route for {method} {path}"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    # -- endpoints --------------------------------------------------------------------------------

    def create_repo(self, path, body):
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if "/" not in repo_id:
            repo_id = f"test-user/{repo_id}"
        with self.state.lock:
            if repo_id in self.state.repos:
                return self._send(409, {"error": "You already created this model repo", "url": self._url(repo_id)})
            self.state.repos[repo_id] = payload
        return self._send(200, {"url": self._url(repo_id), "name": repo_id})

    def _url(self, repo_id):
        return f"{self._base()}/{repo_id}"

    def validate_yaml(self, path, body):
        return self._send(200, {"errors": [], "warnings": []})

    def preupload(self, path, body):
        files = json.loads(body)["files"]
        modes = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                  "shouldIgnore": False, "oid": None} for f in files]
        return self._send(200, {"files": modes, "commitOid": "0" * 40})

    def lfs_batch(self, path, body):
        objects = json.loads(body)["objects"]
        out = [{"oid": o["oid"], "size": o["size"], "authenticated": True,
                "actions": {"upload": {"href": f"{self._base()}/lfs-upload/{o['oid']}"},
                            "verify": {"href": f"{self._base()}/lfs-verify"}}} for o in objects]
        return self._send(200, {"transfer": "basic", "objects": out})

    def lfs_upload(self, path, body):
        oid = path.rsplit("/", 1)[-1]
        if hashlib.sha256(body).hexdigest() != oid:
            return self._send(400, {"error": "sha256 mismatch"})
        with self.state.lock:
            self.state.lfs_objects[oid] = body
        return self._send(200, {})

    def lfs_verify(self, path, body):
        info = json.loads(body)
        ok = info["oid"] in self.state.lfs_objects and len(self.state.lfs_objects[info["oid"]]) == info["size"]
        return self._send(200 if ok else 404, {} if ok else {"error": "object not uploaded"})

    def commit(self, path, body):
        # /api/models/{namespace}/{name}/commit/{revision}
        parts = path.split("/")
        repo_id, revision = f"{parts[3]}/{parts[4]}", parts[6]
        if repo_id not in self.state.repos:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header, files = None, {}
        for line in lines:
            value = line["value"]
            if line["key"] == "header":
                header = value
            elif line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                data = self.state.lfs_objects.get(value["oid"])
                if data is None:
                    return self._send(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                files[value["path"]] = data
        oid = hashlib.sha1(body).hexdigest()
        with self.state.lock:
            self.state.commits.append({"repo": repo_id, "revision": revision, "header": header, "files": files})
        return self._send(200, {"commitUrl": f"{self._url(repo_id)}/commit/{oid}", "commitOid": oid,
                                "pullRequestUrl": None, "success": True})

    def repo_info(self, path, body):
        repo_id = path[len("/api/models/"):]
        if repo_id not in self.state.repos:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return self._send(200, {"id": repo_id, "modelId": repo_id, "sha": "0" * 40, "private": False})


ROUTES = [
    ("POST", lambda p: p == "/api/repos/create", HubHandler.create_repo),
    ("POST", lambda p: p == "/api/validate-yaml", HubHandler.validate_yaml),
    ("POST", lambda p: p.startswith("/api/models/") and "/preupload/" in p, HubHandler.preupload),
    ("POST", lambda p: p.endswith(".git/info/lfs/objects/batch"), HubHandler.lfs_batch),
    ("PUT", lambda p: p.startswith("/lfs-upload/"), HubHandler.lfs_upload),
    ("POST", lambda p: p == "/lfs-verify", HubHandler.lfs_verify),
    ("POST", lambda p: p.startswith("/api/models/") and "/commit/" in p, HubHandler.commit),
    ("GET", lambda p: p.startswith("/api/models/"), HubHandler.repo_info),
]


class HubServer:
    """Context manager: `with HubServer() as hub: ... hub.url, hub.state`."""

    def __init__(self, reject_token=False):
        self.state = HubState(reject_token=reject_token)
        handler = type("BoundHubHandler", (HubHandler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
