"""A Ray cluster of two nodes on this one machine (Ray's own test utility starts it: a head and a
second node, one CPU each): a batch's jobs land on both nodes, and every output is written and
valid."""
from __future__ import annotations

import json
import logging

import pytest
import ray
from PIL import Image
from ray.cluster_utils import Cluster

from impasto import api, batch, executors

# one xdist worker runs every Ray test (make test: --dist loadgroup), one cluster at a time
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_jobs_land_on_both_nodes(two_nodes, tmp_path, content_image, style_image):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    contents = []
    for i in range(4):
        p = tmp_path / f"p{i}.png"
        content_image.rotate(90 * i, expand=True).resize((32, 24) if i % 2 == 0 else (24, 32)).save(p)
        contents.append(str(p))
    style = tmp_path / "s.png"
    style_image.resize((32, 20)).save(style)
    out = tmp_path / "out"
    out.mkdir()
    works, cache = [], {}
    for c in batch.cells(batch.cross(contents, [str(style)]), {"size": 32, "steps": 15,
                                                                "seed": 1}):
        req = api.Request("transfer", c.options, content=c.pair.content, styles=[c.pair.style],
                          output=str(out / f"{c.stem}.png"))
        works.append(executors.Work(c.stem, req, api.prepare(req, cache=cache)))
    ex = executors.make("ray", address=two_nodes.address, threads=1)
    assert ex.cpus() == 2
    fins = list(ex.run(works))
    ex.close()                        # it joined a connection this process already had
    assert ray.is_initialized()
    assert all(f.status == "ran" for f in fins), [(f.status, f.error) for f in fins]
    assert len({f.node for f in fins}) == 2, "every job ran on one node"
    for f in fins:
        with Image.open(out / f"{f.work.key}.png") as im:
            im.load()
        assert json.loads((out / f"{f.work.key}.json").read_text())["output"] == \
            f"{f.work.key}.png"
