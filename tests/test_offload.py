"""A forked child pickles what the process held when it was forked, whatever happens after."""

import asyncio
import pickle

import pytest

from models.offload import Child


async def test_the_child_sees_the_state_at_the_fork():
    state = {"learned": list(range(1000))}
    child = Child(lambda: pickle.dumps(state))
    state["learned"].append("after the fork")  # the parent goes on at once
    assert pickle.loads(await child.result()) == {"learned": list(range(1000))}


async def test_a_failing_child_is_reported():
    def fail():
        raise ValueError("cannot pickle")

    with pytest.raises(RuntimeError, match="failed"):
        await Child(fail).result()


async def test_a_large_result_comes_back_whole():
    big = bytes(range(256)) * 40_000  # 10 MB: more than a pipe holds
    assert await Child(lambda: big).result() == big
    await asyncio.sleep(0)
