"""`PerLoop`: one state per running event loop, found again without its lock."""

from __future__ import annotations

import asyncio

import pytest

from amaimedia._transports import _loops
from amaimedia._transports._loops import PerLoop


class States:
    """A `PerLoop` of numbered states, with what was made and closed."""

    def __init__(self) -> None:
        self.made: list[int] = []
        self.closed: list[int] = []
        self.per_loop: PerLoop[int] = PerLoop(self._prepare, self._create, self._close)

    async def _prepare(self) -> None:
        return None

    def _create(self) -> int:
        self.made.append(len(self.made))
        return self.made[-1]

    async def _close(self, state: int) -> None:
        self.closed.append(state)


def test_one_loop_makes_one_state_however_often_it_asks() -> None:
    states = States()

    async def main() -> list[int]:
        return [await states.per_loop.get() for _ in range(50)]

    assert asyncio.run(main()) == [0] * 50
    assert states.made == [0]
    assert states.closed == [0]  # closed with its loop


def test_each_loop_gets_its_own_state() -> None:
    states = States()

    async def main() -> int:
        return await states.per_loop.get()

    assert [asyncio.run(main()) for _ in range(3)] == [0, 1, 2]
    assert states.closed == [0, 1, 2]


def test_a_state_closed_by_aclose_is_never_handed_out_again() -> None:
    states = States()

    async def main() -> tuple[int, int]:
        first = await states.per_loop.get()
        await states.per_loop.aclose()
        return first, await states.per_loop.get()

    assert asyncio.run(main()) == (0, 1)
    assert states.closed == [0, 1]


def test_a_loop_closed_without_its_generators_is_forgotten() -> None:
    states = States()
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(states.per_loop.get()) == 0
    finally:
        loop.close()  # no shutdown_asyncgens(): its state is never closed

    async def main() -> int:
        return await states.per_loop.get()

    assert asyncio.run(main()) == 1
    assert states.made == [0, 1]


def test_a_forked_child_makes_its_own_state(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a fork changes for PerLoop: the process generation.
    states = States()

    async def main() -> tuple[int, int, int]:
        parents = await states.per_loop.get()
        monkeypatch.setattr(_loops, "generation", lambda: 1)
        child = await states.per_loop.get()
        return parents, child, await states.per_loop.get()

    assert asyncio.run(main()) == (0, 1, 1)
