"""The same batch on the local executor and on a local Ray cluster, in one run.

Four content images (crops of examples/tubingen.jpg) x two styles = 8 jobs at --size px. The
local executor runs them one after another in this process with all cores' threads (what
``impasto batch`` does by default); the Ray executor starts a local cluster with --workers CPUs
and runs every job as a one-thread task. Prints a markdown table: wall time of each, the
speed-up, the mean seconds of a job inside its process, and Ray's overhead: the cluster's
start-up, and per job everything that is not computing (start-up, transferring the images,
scheduling, results), i.e. Ray's wall time less the jobs' own seconds spread over the workers.
A third row runs the same jobs in --workers plain processes without Ray: the ceiling that the
cores set, against which Ray's own cost shows.

    OMP_NUM_THREADS=1 python benchmarks/batch.py --size 160 --steps 60
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_contents(folder: Path) -> list[str]:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(ROOT / "examples" / "tubingen.jpg") as im:
        im = im.convert("RGB")
        w, h = im.size
        boxes = [(0, 0, w, h), (0, 0, int(w * .7), int(h * .7)), (int(w * .3), 0, w, int(h * .7)),
                 (int(w * .15), int(h * .3), int(w * .85), h)]
        paths = []
        for i, box in enumerate(boxes):
            p = folder / f"photo{i + 1}.png"
            im.crop(box).resize((480, round(480 * (box[3] - box[1]) / (box[2] - box[0])))).save(p)
            paths.append(str(p))
    return paths


def jobs_for(contents, styles, outdir: Path, options: dict):
    from impasto import api, batch, sweep
    pairs = batch.cross(contents, styles)
    cells = batch.cells(pairs, options)
    cache, jobs = {}, []
    for c in cells:
        jobs.append(api.prepare(api.Request("transfer", c.options, content=c.pair.content,
                                            styles=[c.pair.style],
                                            output=str(outdir / f"{c.stem}{sweep.EXT}")),
                                check_outputs=False, cache=cache))
    return cells, jobs


class Processes:
    """The baseline of what the cores allow without Ray: ``workers`` plain OS processes
    (spawned, one torch thread each) running the same jobs with the same worker function as
    Ray's tasks (``executors.base.run_request``); no object store, no scheduler."""
    name = "processes"

    def __init__(self, workers: int):
        self.workers = workers

    def run(self, works, **kw):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from impasto.executors import base
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=ctx) as pool:
            futures = {pool.submit(base.run_request, base.absolute_request(w.request), 1, []):
                       (w, time.perf_counter()) for w in works}
            for f in as_completed(futures):
                w, t = futures[f]
                yield base.from_summary(w, f.result(), time.perf_counter() - t)


def run(executor, contents, styles, outdir, options):
    from impasto import sweep
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    t0 = time.perf_counter()
    cells, jobs = jobs_for(contents, styles, outdir, options)
    t_prep = time.perf_counter() - t0
    finished = []
    if executor.name == "ray":
        executor.start()
    t_start = time.perf_counter()
    orig = executor.run

    def spy(works, **kw):
        for fin in orig(works, **kw):
            finished.append(fin)
            yield fin
    executor.run = spy
    ok = sweep.run_cells(cells, jobs, outdir, seed=1, executor=executor)
    wall = time.perf_counter() - t0
    assert ok and all(c.status == "ran" for c in cells), [(c.stem, c.status, c.error)
                                                           for c in cells]
    return {"wall": wall, "prep": t_prep, "startup": t_start - t0 - t_prep,
            "seconds": [f.seconds for f in finished], "pids": [f.pid for f in finished],
            "nodes": {f.node for f in finished}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch"))
    a = p.parse_args(argv)
    import torch

    from impasto import executors
    out = Path(a.out)
    contents = make_contents(out / "inputs")
    styles = [str(ROOT / "examples" / "starry_night.jpg"), str(ROOT / "examples" / "the_scream.jpg")]
    options = {"size": a.size, "steps": a.steps, "seed": 1}
    cores = os.cpu_count()
    local = executors.make("local", threads=cores)
    loc = run(local, contents, styles, out / "local", options)
    procs = run(Processes(a.workers), contents, styles, out / "processes", options)
    import logging

    import ray
    ray_ex = executors.make("ray", threads=1, start=False)
    t0 = time.perf_counter()
    ray.init(num_cpus=a.workers, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    init_s = time.perf_counter() - t0
    r = run(ray_ex, contents, styles, out / "ray", options)
    r["wall"] += init_s
    ray_ex.close()

    n = len(loc["seconds"])
    busy = sum(r["seconds"]) / a.workers
    over = r["wall"] - busy
    first = {}
    for pid, s in zip(r["pids"], r["seconds"]):
        first.setdefault(pid, []).append(s)
    firsts = [v[0] for v in first.values()]
    laters = [x for v in first.values() for x in v[1:]]
    mean_job = statistics.mean(r["seconds"])
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"{n} jobs ({len(contents)} contents x {len(styles)} styles) at {a.size} px, "
          f"{a.steps} steps; {cpu}, {cores} cores, torch {torch.__version__}, "
          f"ray {ray.__version__}; load before: {os.getloadavg()[0]:.2f}")
    print()
    run_over = over - init_s
    print("| executor | jobs | threads per job | wall s | speed-up | mean s per job (in its "
          "process) | Ray start-up s (once) | Ray overhead per job s (share of a job) | "
          "the same with start-up spread over the jobs |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| local | {n} | {local.threads} | {loc['wall']:.1f} | 1.00x | "
          f"{statistics.mean(loc['seconds']):.2f} | | | |")
    print(f"| {a.workers} plain processes (no Ray: what the cores allow) | {n} | 1 | "
          f"{procs['wall']:.1f} | {loc['wall'] / procs['wall']:.2f}x | "
          f"{statistics.mean(procs['seconds']):.2f} | | | |")
    print(f"| ray, local cluster of {a.workers} CPUs | {n} | 1 | {r['wall']:.1f} | "
          f"{loc['wall'] / r['wall']:.2f}x | {mean_job:.2f} | {init_s:.1f} | "
          f"{run_over / n:.2f} ({100 * run_over / n / mean_job:.1f}%) | "
          f"{over / n:.2f} ({100 * over / n / mean_job:.1f}%) |")
    print()
    print(f"Ray wall {r['wall']:.1f} s = jobs' own time over {a.workers} workers {busy:.1f} s + "
          f"overhead {over:.1f} s (cluster start-up {init_s:.1f} s, driver-side checks and "
          f"decoding {r['prep']:.1f} s, the rest {over - init_s - r['prep']:.1f} s: worker "
          "start, transfers, scheduling, the last job waiting alone).")
    print(f"Ray reaches {procs['wall'] / r['wall']:.0%} of the plain processes' speed.")
    if laters:
        print(f"first job in each worker process {statistics.mean(firsts):.2f} s, later jobs "
              f"{statistics.mean(laters):.2f} s (the network is built once per process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
