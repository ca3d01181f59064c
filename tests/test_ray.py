"""The ray executor on a real local Ray cluster that this module starts (2 CPUs, no dashboard):
batch, sweep and explore through the real command line (run in this process, so they join
this cluster), images identical to the local executor's, skip-if-done, a bad file failing only
its rows, a worker killed mid-job, and cancelling. Ray is a test dependency (the test extra),
so a missing Ray fails here rather than skipping."""
from __future__ import annotations

import csv
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image

from impasto import api, batch, cli, executors

# one xdist worker runs every Ray test (make test: --dist loadgroup), one cluster at a time
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture
def inputs(tmp_path, content_image, style_image):
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    content_image.resize((32, 24)).save(a)
    content_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((32, 24)).save(b)
    starry, turned = tmp_path / "starry.png", tmp_path / "turned.png"
    style_image.resize((32, 20)).save(starry)
    style_image.rotate(90, expand=True).resize((20, 32)).save(turned)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return {"contents": [a, b], "styles": [starry, turned], "bad": bad, "dir": tmp_path}


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _valid(folder: Path, stems, interrupted_ok=False):
    """Every image opens whole, every record is impasto's record of it (of a finished run,
    unless ``interrupted_ok``: a run stopped by a cancel keeps its best image, as Ctrl-C does
    locally, and a re-run does it again), no temporary files. Returns the finished ones."""
    finished = []
    for stem in stems:
        with Image.open(folder / f"{stem}.png") as im:
            im.load()
        rec = json.loads((folder / f"{stem}.json").read_text())
        assert rec["output"] == f"{stem}.png"
        if rec["result"]["stop_reason"] != "interrupted":
            finished.append(stem)
        else:
            assert interrupted_ok, stem
    assert not list(folder.glob(".*.part"))
    return finished


def test_batch_on_ray_matches_the_local_executor_and_skips_when_done(cluster, inputs, capsys):
    tmp = inputs["dir"]
    args = ["batch", *map(str, inputs["contents"]), str(inputs["bad"]), "--style",
            *map(str, inputs["styles"]), "--size", "32", "--steps", "3", "--seed", "4",
            "--tile", "48", "--threads", "1"]
    assert cli.main([*args, "-o", str(tmp / "ray"), "--executor", "ray"]) == 1
    err = capsys.readouterr().err
    assert "4 runs on Ray (2 CPUs, 1 per run)" in err and "4 run, 0 skipped" in err
    assert "2 failed" in err and "broken.jpg" in err
    assert ray.is_initialized()                      # the command left this cluster alone
    assert cli.main([*args, "-o", str(tmp / "local")]) == 1
    capsys.readouterr()
    good = [f"{c}__{s}" for c in ("a", "b") for s in ("starry", "turned")]
    _valid(tmp / "ray", good)
    for stem in good:      # the same image, bit for bit, from a Ray worker and from here
        on_ray = np.asarray(Image.open(tmp / "ray" / f"{stem}.png"))
        here = np.asarray(Image.open(tmp / "local" / f"{stem}.png"))
        assert np.array_equal(on_ray, here), stem
    rows, local = _rows(tmp / "ray" / "results.csv"), _rows(tmp / "local" / "results.csv")
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}
    assert [strip(r) for r in rows] == [strip(r) for r in local]
    assert [r["status"] for r in rows] == ["ran"] * 4 + ["failed"] * 2
    assert all("broken.jpg" in r["error"] for r in rows[4:])
    with Image.open(tmp / "ray" / "contact_sheet.png") as sheet:
        assert sheet.size == Image.open(tmp / "local" / "contact_sheet.png").size

    before = {p.name: p.stat().st_mtime_ns for p in (tmp / "ray").glob("*__*.png")}
    assert cli.main([*args, "-o", str(tmp / "ray"), "--executor", "ray"]) == 1
    err = capsys.readouterr().err
    assert err.count("done earlier, skipped") == 4 and "0 run, 4 skipped" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in (tmp / "ray").glob("*__*.png")} == before


def test_sweep_and_explore_on_ray(cluster, inputs, capsys):
    c, s = map(str, (inputs["contents"][0], inputs["styles"][0]))
    out = inputs["dir"] / "sweep"
    assert cli.main(["sweep", c, s, "-o", str(out), "--vary", "style_weight=1,1e2", "--size",
                     "32", "--steps", "2", "--seed", "5", "--executor", "ray"]) == 0
    rows = _rows(out / "results.csv")
    assert [r["file"] for r in rows] == ["a_starry_sw-1.png", "a_starry_sw-1e2.png"]
    assert all(r["status"] == "ran" for r in rows)
    _valid(out, ["a_starry_sw-1", "a_starry_sw-1e2"])
    assert (out / "contact_sheet.png").is_file()
    out = inputs["dir"] / "explore"
    assert cli.main(["explore", c, s, "-o", str(out), "--size", "32", "--steps", "2", "--seed",
                     "3", "--layers", "relu1_1", "relu2_1", "--tile", "32",
                     "--executor", "ray"]) == 0
    _valid(out, ["reconstruct_relu1_1", "reconstruct_relu2_1", "texture_1_relu1_1",
                 "texture_2_relu2_1"])
    assert (out / "reconstructions.png").is_file() and (out / "textures.png").is_file()
    capsys.readouterr()


def _works(inputs, out, options, contents=None):
    out.mkdir(exist_ok=True)
    pairs = batch.cross(list(map(str, contents or inputs["contents"])), [str(inputs["styles"][0])])
    works, cache = [], {}
    for c in batch.cells(pairs, options):
        req = api.Request("transfer", c.options, content=c.pair.content, styles=[c.pair.style],
                          output=str(out / f"{c.stem}.png"))
        works.append(executors.Work(c.stem, req, api.prepare(req, cache=cache)))
    return works


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _impasto_workers():
    """{pid: title} of the workers of this process's Ray cluster (worker -> raylet -> this
    process) running an impasto job now; other clusters on the machine are not touched."""
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                title = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                if title.startswith("ray::impasto:") and \
                        _parent(_parent(int(d.name))) == os.getpid():
                    found[int(d.name)] = title
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_a_worker_killed_mid_job_is_retried_and_the_batch_completes(cluster, inputs):
    out = inputs["dir"] / "killed"
    works = _works(inputs, out, {"size": 48, "steps": 80, "seed": 2})
    # what a worker killed while writing would have left: the retry removes it
    (out / ".a__starry.png.x1y2z3.part").write_bytes(b"half an image")
    ex = executors.make("ray", threads=1)
    got = {}
    runner = threading.Thread(target=lambda: got.update(fins=list(ex.run(works))))
    runner.start()
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline:
        running = _impasto_workers()
        if running:
            victim = min(running)
        time.sleep(0.1)
    assert victim, "no impasto job started on Ray"
    time.sleep(1.0)
    assert _impasto_workers().get(victim, "").startswith("ray::impasto:"), "job ended too soon"
    os.kill(victim, signal.SIGKILL)
    runner.join(300)
    fins = got["fins"]
    assert sorted(f.work.key for f in fins) == ["a__starry", "b__starry"]
    assert all(f.status == "ran" for f in fins), [(f.status, f.error) for f in fins]
    assert victim not in {f.pid for f in fins}       # the killed job ran again elsewhere
    _valid(out, ["a__starry", "b__starry"])


def test_cancel_stops_running_tasks_and_leaves_finished_files_valid(cluster, inputs):
    contents = [inputs["contents"][0]] + [inputs["dir"] / f"c{i}.png" for i in range(3)]
    for i, p in enumerate(contents[1:]):
        Image.open(inputs["contents"][0]).rotate(90 * (i + 1), expand=True).save(p)
    out = inputs["dir"] / "cancelled"
    works = _works(inputs, out, {"size": 48, "steps": 150, "seed": 1}, contents=contents)
    stop = threading.Event()
    fins = []
    for fin in executors.make("ray", threads=1).run(works, cancel=stop):
        fins.append(fin)
        stop.set()                    # after the first finishes: cancel the rest
    status = {f.work.key: f.status for f in fins}
    assert len(fins) == 4 and list(status.values()).count("ran") >= 1, status
    assert set(status.values()) & {"cancelled", "interrupted"}, status
    _valid(out, [k for k, v in status.items() if v == "ran"])
    # a running task stops before its next step and keeps its best image, marked interrupted;
    # one that had not started writes nothing
    _valid(out, [k for k, v in status.items() if v == "interrupted"], interrupted_ok=True)
    for k, v in status.items():
        if v == "cancelled":
            assert (out / f"{k}.png").exists() == (out / f"{k}.json").exists()


def test_ctrl_c_during_a_ray_batch_exits_130_with_finished_files_valid(cluster, inputs, capsys):
    out = inputs["dir"] / "ctrl_c"
    contents = [inputs["contents"][0]] + [inputs["dir"] / f"r{i}.png" for i in range(3)]
    for i, p in enumerate(contents[1:]):
        Image.open(inputs["contents"][0]).rotate(90 * (i + 1), expand=True).save(p)

    def interrupt_after_first():
        deadline = time.time() + 600
        while time.time() < deadline and not list(out.glob("*__*.json")):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
    t = threading.Thread(target=interrupt_after_first)
    t.start()
    rc = cli.main(["batch", *map(str, contents), "--style", str(inputs["styles"][0]), "-o",
                   str(out), "--size", "48", "--steps", "100", "--seed", "1", "--executor",
                   "ray"])
    t.join()
    err = capsys.readouterr().err
    assert rc == 130, err
    assert "interrupted; run the same command again to continue" in err
    written = [p.stem for p in out.glob("*__*.json")]
    finished = _valid(out, written, interrupted_ok=True)
    assert 1 <= len(finished) < 4
    rows = _rows(out / "results.csv")
    assert [r["status"] for r in rows].count("ran") == len(finished)
    assert {r["status"] for r in rows} & {"cancelled", "interrupted"}


def test_video_flow_on_ray_gives_the_same_frames(cluster, inputs, capsys):
    """With --executor ray the optical flow of every frame pair runs as Ray tasks; the frames
    (one after another, each from the one before) come out bit for bit as locally."""
    frames = inputs["dir"] / "frames"
    frames.mkdir()
    base = Image.open(inputs["contents"][0]).resize((64, 48))
    for i in range(4):
        base.transform((48, 36), Image.Transform.EXTENT, (3 * i, i, 3 * i + 48, i + 36)).save(
            frames / f"{i:03d}.png")
    args = ["video", str(frames), str(inputs["styles"][0]), "--size", "32", "--steps", "6",
            "--frame-steps", "3", "--seed", "1", "--threads", "1"]
    assert cli.main([*args, "-o", str(inputs["dir"] / "ray_frames"), "--executor", "ray"]) == 0
    assert "optical flow on Ray" in capsys.readouterr().err
    assert cli.main([*args, "-o", str(inputs["dir"] / "local_frames")]) == 0
    capsys.readouterr()
    on_ray = sorted((inputs["dir"] / "ray_frames").glob("*.png"))
    here = sorted((inputs["dir"] / "local_frames").glob("*.png"))
    assert len(on_ray) == len(here) == 4
    for a, b in zip(on_ray, here):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), a.name
    recs = [json.loads((inputs["dir"] / f"{n}.json").read_text())
            for n in ("ray_frames", "local_frames")]
    assert recs[0]["result"]["temporal_error"] == recs[1]["result"]["temporal_error"]


def test_a_batch_of_clips_runs_several_at_once_on_ray(cluster, inputs, capsys):
    """Contents that are video clips: each clip x style pair is one `impasto video` (frames one
    after another) run by a Ray task, the clips side by side on the two CPUs."""
    from impasto import video_io
    base = Image.open(inputs["contents"][0]).resize((64, 48))
    clips = []
    for k in range(2):
        frames = [base.transform((48, 36), Image.Transform.EXTENT,
                                 (2 * i + 8 * k, i, 2 * i + 8 * k + 48, i + 36)) for i in range(3)]
        clips.append(inputs["dir"] / f"clip{k}.mp4")
        video_io.write(frames, clips[-1], fps=8)
    args = ["batch", *map(str, clips), "--style", str(inputs["styles"][0]), "--size", "32",
            "--steps", "4", "--frame-steps", "2", "--seed", "1", "--threads", "1", "--tile", "32"]
    out = inputs["dir"] / "clips"
    assert cli.main([*args, "-o", str(out), "--executor", "ray"]) == 0
    capsys.readouterr()
    rows = _rows(out / "results.csv")
    assert [r["file"] for r in rows] == ["clip0__starry.mp4", "clip1__starry.mp4"]
    assert all(r["status"] == "ran" and float(r["temporal_error"]) > 0 for r in rows)
    for k in range(2):
        rec = json.loads((out / f"clip{k}__starry.json").read_text())
        assert rec["task"] == "video" and rec["video"]["frames"] == 3 and rec["seed"] == 1
        assert video_io.open_source(out / f"clip{k}__starry.mp4").count == 3
    assert not list(out.glob("*.frames"))
    local = inputs["dir"] / "clips_local"
    assert cli.main([*args, "-o", str(local)]) == 0
    assert [r["temporal_error"] for r in _rows(local / "results.csv")] == \
        [r["temporal_error"] for r in rows]             # the same frames on either executor
    assert cli.main([*args, "-o", str(out), "--executor", "ray"]) == 0
    assert "0 run, 2 skipped" in capsys.readouterr().err
