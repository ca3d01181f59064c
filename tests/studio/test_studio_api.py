"""The studio's JSON API through the real ASGI app (Starlette's TestClient, the real worker
thread, the real run API and VGG19): runs on tiny images followed to the end over
Server-Sent Events, previews, stop, the queue, regions, the gallery, and every refusal with
its status and message; a refusal never leaves a file behind and the studio keeps answering."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic

from impasto import api
from impasto.config import Config
from impasto.errors import UserError

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from impasto.studio.app import create_app  # noqa: E402

BASE = "http://127.0.0.1:8765"
FAST = {"size": 32, "steps": 3, "precision": "fp32", "seed": 1}


def png(w=48, h=32, seed=0, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    synthetic(w, h, seed=seed).save(buf, format=fmt)
    return buf.getvalue()


def files_under(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def make_client(tmp_path):
    made = []

    def make(**kw):
        kw.setdefault("examples_dir", None)
        app = create_app(tmp_path / "data", **kw)
        client = TestClient(app, base_url=BASE)
        client.__enter__()
        made.append(client)
        return client
    yield make
    for c in made:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def upload(client, data, name="image.png", kind="image/png"):
    r = client.post("/api/uploads", params={"name": name}, content=data,
                    headers={"content-type": kind})
    assert r.status_code == 201, r.text
    return r.json()


def start(client, body, status=201):
    r = client.post("/api/runs", json=body)
    assert r.status_code == status, r.text
    return r.json()


def follow(client, run_id, after=0):
    """Every event of a run, read over SSE until the run ends."""
    events = []
    with client.stream("GET", f"/api/runs/{run_id}/events", params={"after": after}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


@pytest.fixture
def pair(client):
    return upload(client, png(48, 32, 1), "photo.png"), upload(client, png(40, 40, 2), "paint.png")


# ============================================================================= runs
def test_a_run_from_upload_to_image_record_and_history(client, pair, tmp_path):
    content, style = pair
    run = start(client, {"content": content["id"], "styles": [style["id"]], "options": FAST})
    assert run["state"] in ("queued", "running") and len(run["id"]) >= 16
    events = follow(client, run["id"])
    kinds = [e["kind"] for e in events]
    assert kinds[:3] == ["queued", "started", "plan"] and kinds[-1] == "done"
    assert kinds.count("step") == 3
    plan, steps, done = events[2], [e for e in events if e["kind"] == "step"], events[-1]
    assert plan["output"] == [32, 21] and plan["peak_bytes"] > 0 and plan["schedule"] == [[32, 3]]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert set(steps[0]["terms"]) == {"content", "style", "tv"} and steps[-1]["eta"] is not None
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert done["state"] == "done" and done["steps"] == 3 and done["seed"] == 1
    # following again from a point replays only what came after it
    assert [e["seq"] for e in follow(client, run["id"], after=4)] == [e["seq"] for e in events[4:]]

    img = client.get(done["image"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size == (32, 21)
    assert "attachment" in client.get(done["image"], params={"download": 1}).headers[
        "content-disposition"]
    rec = client.get(done["record"]).json()
    assert rec["options"]["size"] == 32 and rec["task"] == "transfer"
    assert rec["command"][:3] == ["impasto-studio", "run", run["id"]]
    # the record names the uploads by their stored (server-made) files
    data = tmp_path / "data"
    assert (data / "runs" / run["id"] / rec["inputs"]["content"]).resolve().parent == \
        (data / "uploads").resolve()

    hist = client.get("/api/history").json()["runs"]
    assert [h["id"] for h in hist] == [run["id"]]
    h = hist[0]
    assert h["inputs"]["content"]["id"] == content["id"] and h["inputs"]["content"]["name"] == "photo.png"
    assert h["inputs"]["styles"][0]["id"] == style["id"]
    assert h["options"]["style_weight"] == Config().style_weight and h["result"]["steps"] == 3
    assert h["timings"]["total_s"] > 0
    assert client.get(h["urls"]["thumb"]).headers["content-type"] == "image/jpeg"
    live = client.get(f"/api/runs/{run['id']}").json()
    assert live["state"] == "done" and live["record"]["id"] == run["id"]


def test_preview_while_running_then_stop_keeps_the_best_image(client, pair):
    content, style = pair
    run = start(client, {"content": content["id"], "styles": [style["id"]],
                         "options": {**FAST, "steps": 2000}})
    deadline = time.time() + 120
    while True:
        r = client.get(f"/api/runs/{run['id']}/preview")
        if r.status_code == 200:
            break
        assert r.status_code == 204 and r.headers["x-impasto-state"] in ("queued", "running")
        assert time.time() < deadline
        time.sleep(0.2)
    assert r.headers["content-type"] == "image/jpeg" and int(r.headers["x-impasto-step"]) >= 1
    assert Image.open(io.BytesIO(r.content)).size == (32, 21)
    r2 = client.get(f"/api/runs/{run['id']}/preview")       # a fresh copy: a later step
    assert int(r2.headers["x-impasto-step"]) > int(r.headers["x-impasto-step"])
    stopped = client.post(f"/api/runs/{run['id']}/cancel").json()
    assert stopped["stopped_by"] == "stop"
    done = follow(client, run["id"])[-1]
    assert done["kind"] == "done" and done["state"] == "stopped"
    assert done["stop_reason"] == "interrupted" and 1 <= done["steps"] < 2000
    assert client.get(done["image"]).status_code == 200
    assert client.get("/api/history").json()["runs"][0]["state"] == "stopped"
    again = client.post(f"/api/runs/{run['id']}/cancel")     # a run that ended is kept
    assert again.status_code == 200 and again.json()["state"] == "stopped"


def test_a_time_budget_ends_the_run_and_a_colour_preview_with_preserve_color_luminance(
        client, pair):
    """``options.time`` is the config's time budget: the run plans its steps to fill it, counts
    from the start of its computation (not from the queue) and ends with stop reason "time",
    a finished run (not a stopped one)."""
    content, style = pair
    t0 = time.monotonic()
    run = start(client, {"content": content["id"], "styles": [style["id"]],
                         "options": {"time": "6s", "steps": 100000, "size": 32,
                                     "precision": "fp32", "seed": 1,
                                     "preserve_color": "luminance"}})
    while (r := client.get(f"/api/runs/{run['id']}/preview")).status_code != 200:
        assert r.status_code == 204
    # the run paints the luminance; the preview shows it in the content's colours, as the
    # result will be
    im = Image.open(io.BytesIO(r.content)).convert("RGB")
    px = np.asarray(im, dtype=np.int16)
    spread = int((px.max(axis=2) - px.min(axis=2)).max())
    assert spread > 40, "a grey preview"
    events = follow(client, run["id"])
    wall = time.monotonic() - t0
    done = events[-1]
    assert done["kind"] == "done" and done["state"] == "done", done
    assert done["stop_reason"] == "time" and done["stopped_by"] is None
    assert 1 <= done["steps"] < 100000
    live = client.get(f"/api/runs/{run['id']}").json()
    assert live["finished"] - live["started"] <= 6 * 1.3, live
    assert wall <= 6 * 1.3 + 1.5, wall         # + submitting, reading the last events
    rec = client.get(done["record"]).json()
    assert rec["options"]["time"] == "6s" and rec["result"]["stop_reason"] == "time"
    assert rec["command"] == ["impasto-studio", "run", run["id"]]
    h = client.get("/api/history").json()["runs"][0]
    assert h["state"] == "done" and h["result"]["stop_reason"] == "time"


def test_queue_order_and_cancel_from_the_queue(make_client, tmp_path):
    client = make_client(start_worker=False)          # nothing computes until we say so
    content = upload(client, png(48, 32, 1))
    style = upload(client, png(40, 40, 2))
    body = {"content": content["id"], "styles": [style["id"]], "options": FAST}
    runs = [start(client, body) for _ in range(3)]
    assert [r["position"] for r in runs] == [1, 2, 3]
    assert all(r["state"] == "queued" for r in runs)
    cancelled = client.post(f"/api/runs/{runs[1]['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["position"] is None
    listing = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert listing[runs[0]["id"]]["position"] == 1 and listing[runs[2]["id"]]["position"] == 2
    assert not (tmp_path / "data" / "runs" / runs[1]["id"]).exists()   # nothing left of it
    assert [e["kind"] for e in follow(client, runs[1]["id"])] == ["queued", "cancelled"]

    client.app.studio.jobs.start()
    first, third = follow(client, runs[0]["id"])[-1], follow(client, runs[2]["id"])[-1]
    assert first["state"] == third["state"] == "done"
    a, c = (client.get(f"/api/runs/{r['id']}").json() for r in (runs[0], runs[2]))
    assert a["started"] < a["finished"] <= c["started"]     # one at a time, in order
    assert {h["id"] for h in client.get("/api/history").json()["runs"]} == \
        {runs[0]["id"], runs[2]["id"]}


def test_regions_from_a_painted_mask(client, pair):
    content, style = pair
    mask = Image.new("RGB", (48, 32), (0, 0, 0))
    mask.paste((255, 0, 0), (0, 0, 48, 12))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    m = upload(client, buf.getvalue(), "mask.png")
    other = upload(client, png(40, 40, 3), "second.png")
    run = start(client, {"content": content["id"], "mask": m["id"], "options": FAST,
                         "region_styles": [["ff0000", style["id"]], ["000000", other["id"]]]})
    done = follow(client, run["id"])[-1]
    assert done["state"] == "done", done
    h = client.get(f"/api/runs/{run['id']}").json()["record"]
    assert h["inputs"]["mask"]["id"] == m["id"]
    assert [[c, s["id"]] for c, s in h["inputs"]["region_styles"]] == \
        [["ff0000", style["id"]], ["000000", other["id"]]]
    # a region left as the photo, given as a mapping
    run = start(client, {"content": content["id"], "mask": m["id"], "options": FAST,
                         "region_styles": {"ff0000": style["id"], "000000": None}})
    assert follow(client, run["id"])[-1]["state"] == "done"


# ============================================================================= the controls
def test_the_option_controls_come_from_the_config(client):
    s = client.get("/api/options").json()
    fields = {f["name"]: f for f in s["fields"]}
    cfg = Config.for_task("transfer")
    assert fields["size"]["default"] == cfg.size and fields["size"]["type"] == "int"
    assert fields["style_weight"]["help"].startswith("weight of the style loss")
    assert fields["preserve_color"]["choices"] == ["none", "luminance", "histogram"]
    assert fields["size"]["group"] == "main" and fields["history_size"]["group"] == "advanced"
    # the time budget is the config's own option, a main control right after the steps
    names = [f["name"] for f in s["fields"]]
    assert names[:3] == ["size", "steps", "time"] and "run_fields" not in s
    assert fields["time"]["type"] == "str" and fields["time"]["default"] is None
    assert fields["time"]["group"] == "main" and fields["time"]["metavar"] == "DURATION"
    assert "weights" not in fields and "style_blend" not in fields and "temporal" not in fields
    assert s["model_layers"]["vgg19"]["content_layers"] == ["relu4_2"]
    tex = {f["name"]: f for f in client.get("/api/options", params={"task": "texture"}).json()["fields"]}
    assert tex["init"]["default"] == "gaussian" and "content" not in tex["init"]["choices"]
    assert client.get("/api/options", params={"task": "nope"}).status_code == 400


# ============================================================================= refusals
def cli_message(**options) -> str:
    """What the run API (so the command line) says about these options."""
    with pytest.raises(UserError) as e:
        api.make_config("transfer", options)
    return str(e.value)


@pytest.mark.parametrize("options", [
    {"size": 8}, {"size": "big"}, {"steps": -1}, {"sise": 64},
    {"optimizer": "sgd"}, {"size": 8, "style_weight": "x"}, {"seed": 1.5},
    {"preserve_color": "luminance", "color_from": "style"}, {"time": "soon"}, {"time": "0s"},
    {"time": 60},
])
def test_bad_options_get_the_run_apis_message(client, pair, tmp_path, options):
    content, style = pair
    r = client.post("/api/runs", json={"content": content["id"], "styles": [style["id"]],
                                       "options": options})
    assert r.status_code == 400
    assert r.json()["error"] == cli_message(**options)
    assert files_under(tmp_path / "data" / "runs") == []       # nothing left behind


def test_the_same_message_as_the_command_line(client, pair, run_cli, image_files):
    content, style = pair
    r = client.post("/api/runs", json={"content": content["id"], "styles": [style["id"]],
                                       "options": {"size": 8}})
    proc = run_cli("transfer", image_files["content"], image_files["style"], "-o",
                   image_files["out"] / "x.png", "--size", "8")
    assert proc.stderr.strip() == f"impasto: error: {r.json()['error']}"


@pytest.mark.parametrize("body, status, fragment", [
    ({"content": "nope", "styles": []}, 400, "content: no image 'nope' here"),
    ({"content": "../../../etc/passwd", "styles": []}, 400, "no image '../../../etc/passwd'"),
    ({"content": "/etc/passwd", "styles": []}, 400, "no image '/etc/passwd'"),
    ({"content": "C", "styles": ["S"], "options": {"weights": "/etc/passwd"}}, 400,
     "option --weights: the studio does not open files"),
    ({"content": "C", "styles": ["S"], "options": {"init": "/etc/passwd"}}, 400,
     "option --init: '/etc/passwd' is not one of"),
    ({"content": "C", "styles": ["S"], "output": "/tmp/x.png"}, 400, "'output': unknown field"),
    ({"content": "C", "styles": ["S"], "time_limit": 60}, 400, "'time_limit': unknown field"),
    ({"content": "C", "styles": ["S"], "options": {"time": "soon"}}, 400,
     "option --time: 'soon' is not a duration such as 30s, 2m, 1m30s or 1h"),
    ({"content": "C", "styles": "S"}, 400, "is not a list of image ids"),
    ({"content": "C", "styles": ["S"], "task": "video"}, 400, "task: 'video' is not one of"),
    ({"content": "C"}, 400, "impasto transfer: give a STYLE image"),
    ({"content": "C", "styles": ["S"], "mask": "C", "region_styles": [["red", "S"]]}, 400,
     "with --mask, give the styles with --region-style"),
    ([1, 2], 400, "not a JSON object"),
])
def test_bad_run_requests(client, pair, tmp_path, body, status, fragment):
    ids = {"C": pair[0]["id"], "S": pair[1]["id"]}
    fix = lambda v: ids.get(v, v) if isinstance(v, str) else [fix(x) for x in v] \
        if isinstance(v, list) else v
    if isinstance(body, dict):
        body = {k: fix(v) if k in ("content", "styles", "mask") else v for k, v in body.items()}
        if "region_styles" in body:
            body["region_styles"] = [[c, ids.get(s, s)] for c, s in body["region_styles"]]
    r = client.post("/api/runs", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    assert files_under(tmp_path / "data" / "runs") == []


def test_run_requests_must_be_json(client, tmp_path):
    r = client.post("/api/runs", content=b"content=x", headers={"content-type":
                                                                "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "send JSON" in r.json()["error"]
    r = client.post("/api/runs", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "the request body is not valid JSON"
    r = client.post("/api/runs", content=b"[" * 2_000_000,
                    headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("data, kind, status, fragment", [
    (b"hello, not an image", "image/png", 400, "not an image Pillow can read"),
    (png()[:200], "image/png", 400, "truncated or corrupt"),
    (b"", "image/png", 400, "the file is empty"),
    (png(), "text/plain", 415, "the upload's type is 'text/plain'"),
    (png(), "", 415, "the upload's type is"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 400, "not an image"),
])
def test_bad_uploads(client, tmp_path, data, kind, status, fragment):
    before = files_under(tmp_path / "data")
    r = client.post("/api/uploads", params={"name": "x.png"}, content=data,
                    headers={"content-type": kind} if kind else {"content-type": ""})
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    assert files_under(tmp_path / "data") == before
    assert client.get("/api/status").status_code == 200


def test_upload_limits_in_bytes_and_pixels(make_client, tmp_path):
    client = make_client(max_upload_bytes=20_000, max_input_pixels=40 * 40)
    before = files_under(tmp_path / "data")
    big = bytes(range(256)) * 100                       # 25,600 bytes
    r = client.post("/api/uploads", content=big, headers={"content-type": "image/png"})
    assert r.status_code == 413 and "larger than the studio's limit of 19 KB" in r.json()["error"]
    # streamed without a length: refused once the limit is passed
    r = client.post("/api/uploads", content=iter([big[:10_000]] * 3),
                    headers={"content-type": "image/png"})
    assert r.status_code == 413
    r = client.post("/api/uploads", params={"name": "wide.png"}, content=png(48, 40),
                    headers={"content-type": "image/png"})
    assert r.status_code == 413
    assert r.json()["error"] == ("wide.png: 48x40 is 1,920 pixels, above the limit of 1,600; "
                                 "raise it with --max-input-pixels N if you trust the file")
    assert files_under(tmp_path / "data") == before
    assert upload(client, png(40, 40))["width"] == 40           # within both limits


def test_upload_names_are_labels_never_paths(client, tmp_path):
    im = upload(client, png(), name="../../../evil\n.png")
    assert im["name"] == "evil.png"
    stored = list((tmp_path / "data" / "uploads").iterdir())
    assert sorted(p.name for p in stored) == sorted([f"{im['id']}.png", "index.json"])
    assert not (tmp_path / "evil.png").exists()
    assert upload(client, png(), name="other.png")["id"] == im["id"]     # same bytes, once
    assert client.get(im["url"]).headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize("path", [
    "/api/runs/..%2F..%2F..%2Fetc%2Fpasswd", "/api/runs/../../etc/passwd",
    "/api/runs/%2e%2e/record", "/api/examples/..%2F..%2Fpyproject.toml",
    "/api/examples/..%2Fexamples%2Ftubingen.jpg", "/static/..%2Fapp.py", "/static/app.py",
    "/api/uploads/..%2Findex.json", "/api/uploads/index", "/api/runs/x/image",
    "/etc/passwd", "/api/runs/%2e%2e%2f%2e%2e%2fpyproject.toml",
])
def test_path_tricks_find_nothing(client, pair, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert "root:" not in r.text and "[project]" not in r.text


def test_foreign_origins_and_hosts_are_refused(client, pair, tmp_path):
    content, style = pair
    body = {"content": content["id"], "styles": [style["id"]], "options": FAST}
    for headers, fragment in [
            ({"origin": "http://evil.example"}, "Origin 'http://evil.example'"),
            ({"origin": "http://localhost:3000"}, "requests from other sites"),
            ({"origin": "null"}, "requests from other sites"),
            ({"sec-fetch-site": "cross-site"}, "requests from other sites"),
            ({"host": "evil.example:8765"}, "answers only at"),       # DNS rebinding
            ({"host": "127.0.0.1:9999"}, "answers only at")]:
        r = client.post("/api/runs", json=body, headers=headers)
        assert r.status_code == 403, headers
        assert fragment in r.json()["error"]
        assert client.post("/api/uploads", content=png(), headers={
            "content-type": "image/png", **headers}).status_code == 403
    assert files_under(tmp_path / "data" / "runs") == []
    assert len(list((tmp_path / "data" / "uploads").glob("*.png"))) == 2
    r = client.get("/api/status", headers={"origin": BASE})     # the studio's own page
    assert r.status_code == 200
    assert client.get("/api/status", headers={"host": "localhost:8765"}).status_code == 200


def test_another_host_needs_the_token(make_client):
    client = make_client(host="0.0.0.0", port=8765, token="s3cret")
    assert client.get("/api/status").status_code == 401
    assert client.get("/").status_code == 401
    assert client.get("/api/status", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/status", headers={"authorization": "Bearer s3cret"}).status_code == 200
    r = client.get("/", params={"token": "s3cret"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    assert client.get("/api/status").status_code == 200          # the cookie, from now on
    assert client.get("/api/status", headers={"origin": "http://evil.example"}).status_code == 403


def test_the_page_and_its_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and "impasto studio" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    for name in ("studio.js", "studio.css", "paint.js", "chart.js", "gallery.js"):
        assert client.get(f"/static/{name}").status_code == 200
    page = r.text + "".join(client.get(f"/static/{n}").text for n in ("studio.js", "paint.js",
                                                                       "chart.js", "gallery.js"))
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert client.get("/api").json()["endpoints"]


def test_a_broken_record_does_not_break_the_gallery(client, tmp_path):
    folder = tmp_path / "data" / "runs" / "AAAAAAAAAAAAAAAA"
    folder.mkdir(parents=True)
    synthetic(32, 21).save(folder / "painting.png")
    (folder / "painting.json").write_text("{not json")
    r = client.get("/api/history")
    assert r.status_code == 200
    [entry] = r.json()["runs"]
    assert entry["state"] == "unreadable" and "not valid JSON" in entry["error"]
    assert client.get("/api/runs/AAAAAAAAAAAAAAAA").json()["state"] == "unreadable"
