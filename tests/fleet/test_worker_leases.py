"""The leases of two worker processes of one node (`serve --workers 2`: one data directory, one
node name, each process its own holder id) on a real redis-server: the blob sweep's lease and the
reserved-concurrency slots. Neither worker's lease may take or drop the other's."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import redis

from edge.sync import ControlPlane, FleetSlots, node_id
from gateway.functions.registry_sweep import BlobSweeper, SweepReport
from tests.fleet.test_blob_sweep_redis import GRACE, age, code, node, sweeper
from tests.registry.test_blob_sweep import Clock


def test_two_workers_of_a_node_sweep_redis_one_at_a_time_and_its_files_once(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    data_dir = tmp_path / "node"  # one node: both workers' registries on one data directory
    one, two = node(redis_url, data_dir), node(redis_url, data_dir)
    gone_path, gone = code(tmp_path, "gone")
    kept_path, kept = code(tmp_path, "kept")
    one.deploy("gone", gone_path)
    one.deploy("kept", kept_path)
    compiled = data_dir / "compiled"
    compiled.mkdir()
    for sha in (gone, kept):
        (compiled / f"{sha}-0123abcd.cwasm").write_bytes(b"compiled")
        age(compiled / f"{sha}-0123abcd.cwasm")
        age(two.blob_path(sha))  # the node's one local copy, fetched by either worker
    one.delete("gone")
    clock = Clock()
    sweeps = [sweeper(one, clock), sweeper(two, clock)]
    assert sweeps[0].holder != sweeps[1].holder  # each process holds the lease under its own name

    assert one.store.lease("blob-sweep", sweeps[0].holder, 300)  # worker one is mid-pass
    report = sweeps[1].sweep()
    assert not report.leased and report.marked == [] and report.local == []
    assert redis_client.get("edgefn:lease:blob-sweep") == sweeps[0].holder.encode()  # not taken over
    one.store.release("blob-sweep", sweeps[0].holder)
    assert sweeps[0].sweep().marked == [gone]

    # past the grace period both workers sweep at the same moment, several times over
    clock.advance(2 * GRACE)
    reports: list[SweepReport] = []
    failures: list[BaseException] = []

    def passes(sweep: BlobSweeper, start: threading.Barrier) -> None:
        try:
            for _ in range(5):
                start.wait(30)
                reports.append(sweep.sweep())
        except BaseException as exc:  # the test reads it after join
            failures.append(exc)

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=passes, args=(s, barrier)) for s in sweeps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert [sha for r in reports for sha in r.deleted] == [gone]  # deleted once, by the holder
    removed = [p.name for r in reports for p in r.local]
    assert sorted(removed) == sorted([f"{gone}-0123abcd.cwasm", f"{gone}.wasm"])  # each file once
    assert (compiled / f"{kept}-0123abcd.cwasm").exists() and one.store.blob_path_local(kept).exists()
    assert not redis_client.exists("edgefn:lease:blob-sweep")  # released after every pass
    one.close()
    two.close()


def test_two_workers_slots_are_renewed_apart_and_released_apart(redis_url: str) -> None:
    plane = ControlPlane.parse(f"{redis_url}?lease_s=1.5")

    async def run() -> None:
        one, two = FleetSlots(plane, node_id("node-0")), FleetSlots(plane, node_id("node-0"))
        await one.start()
        await two.start()
        mine = await one.acquire("f", 2)
        theirs = await two.acquire("f", 2)
        assert mine and theirs and await one.acquire("f", 2) is None
        await asyncio.sleep(plane.lease_s * 3)  # three leases: held only by renewal
        assert await two.acquire("f", 2) is None  # neither worker's renewal dropped the other's slot
        await one.aclose()  # a graceful stop of worker one gives its slot back, not worker two's
        client = plane.async_client()
        assert [s.decode() for s in await client.zrange(one.key("f"), 0, -1)] == [theirs]
        await client.aclose()
        assert await two.acquire("f", 2) is not None
        await two.aclose()

    asyncio.run(run())
