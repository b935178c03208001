"""A test-only, in-memory, Hub-compatible HTTP server, so publishing is tested through the real clients.

It answers the endpoints that huggingface_hub, transformers and datasets call (listed in DESIGN.md):
repo create/info, preupload, NDJSON commits, LFS basic upload, tree / paths-info listings, branches and
`resolve` downloads with the headers the clients read. Repositories are git-like enough for the
clients: every commit has a sha, branches point at commits, LFS files are stored by sha256 and listed
with their pointer info. Private repositories are invisible without the token that created them.
It is not a Hub: no auth scopes, no pagination, no pull requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

# The test session's fake Hub token (conftest sets HF_TOKEN to it), so tests can check it never leaks.
TEST_TOKEN = "hf_TestTokenThatMustNeverBeWrittenAnywhere"

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".arrow", ".joblib", ".pkl", ".zip")
LFS_MIN_SIZE = 100_000


@dataclass
class Repo:
    kind: str  # "model" | "dataset"
    repo_id: str
    private: bool
    owner_token: str | None
    commits: dict = field(default_factory=dict)  # sha -> {path: (bytes, is_lfs)}
    branches: dict = field(default_factory=dict)  # name -> sha

    def files(self, revision: str) -> tuple[str, dict] | None:
        sha = self.branches.get(revision, revision if revision in self.commits else None)
        return None if sha is None else (sha, self.commits[sha])


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubState:
    """What the server holds: repos by (kind, id), LFS objects by sha256, and every Authorization header seen."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.tokens_seen: list[str] = []
        self.lock = threading.Lock()

    def new_repo(self, kind: str, repo_id: str, private: bool, token: str | None) -> Repo:
        repo = Repo(kind, repo_id, private, token)
        sha = uuid.uuid4().hex + "00000000"
        repo.commits[sha] = {".gitattributes": (b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", False)}
        repo.branches["main"] = sha
        self.repos[(kind, repo_id)] = repo
        return repo


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, body: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.body = status, code, message, body


KIND_PREFIX = {"models": "model", "datasets": "dataset"}


class Handler(BaseHTTPRequestHandler):
    state: HubState  # set on the subclass made by start_server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    # ---- plumbing ----
    def token(self) -> str | None:
        header = self.headers.get("Authorization")
        if header:
            self.state.tokens_seen.append(header)
        return header.split(" ", 1)[1] if header and " " in header else None

    def body(self) -> bytes:
        return self.request_body

    def reply(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None, head=False):
        data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def dispatch(self, method: str):
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.request_body = self.rfile.read(length) if length else b""  # always drained: keep-alive stays in sync
        try:
            with self.state.lock:
                self.route(method, path, query)
        except HubError as error:
            body = error.body or {"error": error.message}
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            self.reply(error.status, body, headers, head=method == "HEAD")

    do_GET = lambda self: self.dispatch("GET")  # noqa: E731
    do_HEAD = lambda self: self.dispatch("HEAD")  # noqa: E731
    do_POST = lambda self: self.dispatch("POST")  # noqa: E731
    do_PUT = lambda self: self.dispatch("PUT")  # noqa: E731

    def repo(self, kind: str, repo_id: str, write: bool = False) -> Repo:
        repo = self.state.repos.get((kind, repo_id))
        token = self.token()
        if repo is None or (repo.private and token != repo.owner_token):
            raise HubError(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
        if write and token is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return repo

    def revision(self, repo: Repo, revision: str) -> tuple[str, dict]:
        found = repo.files(revision)
        if found is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return found

    # ---- routes ----
    def route(self, method: str, path: str, query: dict):
        base = f"http://{self.headers.get('Host')}"
        if method == "POST" and path == "/api/repos/create":
            return self.create_repo(json.loads(self.body()), base)
        if method == "POST" and path == "/api/validate-yaml":
            return self.reply(200, {"errors": [], "warnings": []})
        if method == "GET" and path == "/api/whoami-v2":
            if self.token() is None:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return self.reply(
                200, {"type": "user", "name": "tester", "orgs": [], "auth": {"accessToken": {"role": "write"}}}
            )
        match = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/(.*))?", path)
        if match:
            return self.api(method, KIND_PREFIX[match[1]], match[2], match[3] or "", query, base)
        match = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if method == "POST" and match:
            return self.lfs_batch(json.loads(self.body()), base)
        match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)
        if method == "PUT" and match:
            data = self.body()
            if hashlib.sha256(data).hexdigest() != match[1]:
                raise HubError(400, None, "sha256 mismatch")
            self.state.lfs[match[1]] = data
            return self.reply(200, {})
        match = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if method in ("GET", "HEAD") and match:
            return self.resolve(method, "dataset" if match[1] else "model", match[2], match[3], match[4])
        raise HubError(404, None, f"no route for {method} {path}")

    def create_repo(self, payload: dict, base: str):
        kind = payload.get("type") or "model"
        repo_id = (
            f"{payload['organization']}/{payload['name']}"
            if payload.get("organization")
            else f"tester/{payload['name']}"
        )
        url = f"{base}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
        if self.token() is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if (kind, repo_id) in self.state.repos:
            raise HubError(
                409, None, "You already created this repo", {"error": "You already created this repo", "url": url}
            )
        self.state.new_repo(
            kind, repo_id, payload.get("visibility") == "private" or bool(payload.get("private")), self.token()
        )
        self.reply(200, {"url": url, "name": repo_id})

    def api(self, method: str, kind: str, repo_id: str, rest: str, query: dict, base: str):
        write = method == "POST"
        repo = self.repo(kind, repo_id, write=write)
        parts = rest.split("/", 1) if rest else [""]
        action, tail = parts[0], parts[1] if len(parts) > 1 else ""
        if method == "GET" and action in ("", "revision"):
            sha, files = self.revision(repo, tail or "main")
            siblings = [{"rfilename": p} for p in sorted(files)]
            return self.reply(
                200,
                {
                    "id": repo_id,
                    "_id": repo_id,
                    "sha": sha,
                    "private": repo.private,
                    "siblings": siblings,
                    "tags": [],
                    "downloads": 0,
                    "likes": 0,
                    "gated": False,
                    "disabled": False,
                    "author": repo_id.split("/")[0],
                    "lastModified": "2026-01-01T00:00:00.000Z",
                },
            )
        if action == "preupload":
            payload = json.loads(self.body())
            return self.reply(
                200,
                {
                    "files": [
                        {
                            "path": f["path"],
                            "uploadMode": "lfs" if is_lfs(f["path"], f.get("size", 0)) else "regular",
                            "shouldIgnore": False,
                            "oid": None,
                        }
                        for f in payload["files"]
                    ]
                },
            )
        if action == "commit":
            return self.commit(repo, tail, self.body(), base)
        if action == "branch" and method == "POST":
            payload = json.loads(self.body() or b"{}")
            if tail in repo.branches:
                raise HubError(409, None, f"Reference already exists: refs/heads/{tail}")
            repo.branches[tail] = self.revision(repo, payload.get("startingPoint") or "main")[0]
            return self.reply(200, {})
        if action == "refs" and method == "GET":
            return self.reply(
                200,
                {
                    "branches": [
                        {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()
                    ],
                    "converts": [],
                    "tags": [],
                },
            )
        if action == "tree" and method == "GET":
            revision, _, folder = tail.partition("/")
            _, files = self.revision(repo, revision)
            return self.reply(
                200,
                self.listing(
                    files, folder.strip("/"), "recursive" in query and query["recursive"][0] in ("1", "true", "True")
                ),
            )
        if action == "paths-info" and method == "POST":
            _, files = self.revision(repo, tail)
            raw = self.body()
            payload = (
                json.loads(raw)
                if self.headers.get("Content-Type", "").startswith("application/json")
                else parse_qs(raw.decode())
            )
            wanted = payload.get("paths", [])
            wanted = [wanted] if isinstance(wanted, str) else wanted
            entries = self.listing(files, "", True)
            return self.reply(200, [e for e in entries if e["path"] in {p.strip("/") for p in wanted}])
        raise HubError(404, None, f"no route for {method} /api/{kind}s/{repo_id}/{rest}")

    def listing(self, files: dict, folder: str, recursive: bool) -> list:
        prefix = f"{folder}/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in files):
            raise HubError(404, "EntryNotFound", f"{folder} does not exist on this revision")
        entries, folders = [], set()
        for path, (data, lfs) in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            inner = path[len(prefix) :].split("/")
            for depth in range(1, len(inner)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(inner[:depth]))
            if recursive or len(inner) == 1:
                entries.append(file_entry(path, data, lfs))
        entries += [
            {"type": "directory", "oid": git_blob_sha(d.encode()), "size": 0, "path": d} for d in sorted(folders)
        ]
        return entries

    def commit(self, repo: Repo, revision: str, raw: bytes, base: str):
        parent_sha, files = self.revision(repo, revision)
        files = dict(files)
        for line in raw.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = (base64.b64decode(value["content"]), False)
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.state.lfs:
                    raise HubError(400, None, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = (self.state.lfs[value["oid"]], True)
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif item["key"] == "deletedFolder":
                files = {p: v for p, v in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        sha = hashlib.sha1(parent_sha.encode() + raw).hexdigest()
        repo.commits[sha] = files
        repo.branches[revision if revision in repo.branches else "main"] = sha
        prefix = "datasets/" if repo.kind == "dataset" else ""
        self.reply(
            200, {"commitOid": sha, "commitUrl": f"{base}/{prefix}{repo.repo_id}/commit/{sha}", "pullRequestUrl": None}
        )

    def lfs_batch(self, payload: dict, base: str):
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.lfs:
                entry["actions"] = {"upload": {"href": f"{base}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self.reply(200, {"transfer": "basic", "objects": objects})

    def resolve(self, method: str, kind: str, repo_id: str, revision: str, path: str):
        repo = self.repo(kind, repo_id)
        sha, files = self.revision(repo, revision)
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}")
        data, lfs = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(data)}"', "Accept-Ranges": "bytes"}
        if lfs:
            headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))})
        status, body = 200, data
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start, end = int(match[1]), int(match[2]) if match[2] else len(data) - 1
            body, status = data[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
        headers["Content-Length"] = str(len(body))
        self.reply(status, headers=headers, raw=body, head=method == "HEAD")


def is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


def file_entry(path: str, data: bytes, lfs: bool) -> dict:
    entry = {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": path}
    if lfs:
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


def start_server(port: int = 0) -> tuple[ThreadingHTTPServer, HubState]:
    """Serve on 127.0.0.1:`port` (0 = any free port) in a daemon thread; returns the server and its state."""
    state = HubState()
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state
