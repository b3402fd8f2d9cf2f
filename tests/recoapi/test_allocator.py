"""The web workers' C allocator settings: the arena limit holds across threads, a load's free memory goes back."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recoapi import allocator

ROOT = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(allocator._glibc() is None, reason="the C library here is not glibc")

# Four threads allocate numpy arrays (malloc) while holding each other up, then glibc lists its arenas.
_THREADS = textwrap.dedent("""
    import ctypes, sys, threading
    import numpy as np
    from recoapi import allocator

    limit = int(sys.argv[1])
    print("applied", allocator.limit_arenas(limit), flush=True)
    barrier = threading.Barrier(4)
    kept = []

    def work():
        barrier.wait()
        for _ in range(200):
            kept.append(np.ones(20_000))
            kept.pop(0) if len(kept) > 8 else None

    threads = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    sys.stdout.flush()
    ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
""")


def _arenas(limit: int) -> int:
    result = subprocess.run([sys.executable, "-c", _THREADS, str(limit)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return sum(line.startswith("Arena ") for line in result.stderr.splitlines())


@glibc_only
def test_the_arena_limit_holds_while_threads_allocate_at_once() -> None:
    assert _arenas(0) > 2  # glibc's default: each new thread that allocates gets an arena of its own
    assert _arenas(2) <= 2
    assert _arenas(1) == 1


def test_a_negative_arena_count_is_refused_and_zero_leaves_the_default() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        allocator.limit_arenas(-1)
    assert allocator.limit_arenas(0) is False


@glibc_only
def test_free_memory_goes_back_after_a_large_temporary() -> None:
    script = textwrap.dedent("""
        from pathlib import Path
        import numpy as np
        from recoapi import allocator

        def anonymous_kb():
            rollup = Path("/proc/self/smaps_rollup").read_text().splitlines()
            return next(int(line.split()[1]) for line in rollup if line.startswith("Anonymous:"))

        # many blocks under malloc's mmap threshold: they come from the heap, which keeps them once freed
        blocks = [np.ones(12_000) for _ in range(4_000)]  # about 380 MB
        kept = blocks[-1]
        del blocks
        before = anonymous_kb()
        released = allocator.release_free_memory()
        print(released, before, anonymous_kb())
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    released, before, after = result.stdout.split()
    assert released == "True"
    assert int(before) - int(after) > 200_000  # KB: most of the freed blocks went back


@pytest.mark.parametrize("name", ["RECO_MALLOC_ARENAS", "RECO_RELEASE_AFTER_SHOPPERS"])
def test_a_negative_allocator_setting_stops_the_start(name: str) -> None:
    import os

    env = {**os.environ, name: "-1"}
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"{name} must be 0" in result.stderr


def test_a_web_worker_limits_its_arenas_before_loading_its_model(monkeypatch: pytest.MonkeyPatch, settings) -> None:  # noqa: ANN001
    from recoapi.recommendations import engine

    calls: list[str] = []
    monkeypatch.setattr(allocator, "limit_arenas", lambda count: calls.append(f"arenas {count}") or True)
    monkeypatch.setattr(engine.registry, "current", lambda: calls.append("load"))
    monkeypatch.setattr(engine, "_freeze_after_load", False)  # start_worker sets it: put back afterwards
    settings.RECO_MALLOC_ARENAS = 3
    engine.start_worker()
    assert calls == ["arenas 3", "load"]


def test_a_web_worker_hands_memory_back_after_a_request_for_many_shoppers(monkeypatch: pytest.MonkeyPatch,
                                                                         settings) -> None:  # noqa: ANN001
    from recoapi.recommendations import engine

    calls: list[str] = []
    monkeypatch.setattr(allocator, "release_free_memory", lambda: calls.append("release") or True)
    monkeypatch.setattr(engine, "_quiet_release", allocator.QuietRelease(0.01))  # the default waits a second
    settings.RECO_RELEASE_AFTER_SHOPPERS = 20
    monkeypatch.setattr(engine, "_freeze_after_load", False)  # not a web worker (tests, commands): never
    assert engine.after_request(100) is False
    monkeypatch.setattr(engine, "_freeze_after_load", True)
    assert engine.after_request(19) is False
    time.sleep(0.1)
    assert calls == []
    assert engine.after_request(20) is True
    _wait_for(lambda: calls == ["release"])
    settings.RECO_RELEASE_AFTER_SHOPPERS = 0
    assert engine.after_request(100) is False
    time.sleep(0.1)
    assert calls == ["release"]


def _wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.005)


def test_memory_is_handed_back_once_no_request_for_many_shoppers_came_for_the_delay() -> None:
    now = [100.0]
    released: list[float] = []
    quiet = allocator.QuietRelease(10, release=lambda: released.append(now[0]), clock=lambda: now[0])

    def look_at(time_now: float) -> None:  # move the clock, and wait until the thread has looked at it
        now[0] = time_now
        checks = quiet.checks
        quiet.wake()
        _wait_for(lambda: quiet.checks > checks)

    quiet.request()  # due at 110
    look_at(105)
    quiet.request()  # another before then: due at 115
    look_at(112)
    assert released == []
    look_at(115)
    _wait_for(lambda: released == [115])
    quiet.request()  # the next one waits again
    look_at(124)
    assert released == [115]
    look_at(125.5)
    _wait_for(lambda: released == [115, 125.5])

