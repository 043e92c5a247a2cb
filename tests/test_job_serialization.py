"""Jobs are JSON: a job written into Redis by someone else cannot run code in a worker."""

from __future__ import annotations

import os
import pickle
import time

from arq.constants import job_key_prefix


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


async def test_a_pickled_job_planted_in_redis_runs_nothing(redis, settings, run_worker, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(
        {"t": 1, "f": "run_execution", "a": [_Exploit(str(marker)), 0], "k": {}, "et": 0}
    )
    job = "planted:0"
    await redis.psetex(job_key_prefix + job, 60_000, payload)
    await redis.zadd(settings.queues.default, {job: int(time.time() * 1000)})
    await run_worker()
    assert not marker.exists(), "a pickled job ran code in the worker"
    assert await redis.zcard(settings.queues.default) == 0  # refused and dropped, not stuck
