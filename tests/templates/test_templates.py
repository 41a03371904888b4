"""Function templates: workers forked from a process that loaded the function compute
exactly what a fresh process does, start without loading, and templates are kept within
their memory budget."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import numpy as np
import pytest

from runtime.control import LocalProvider, ProvidedWorker, template_key
from runtime.core import FunctionSpec, Settings, WorkerDirectory, WorkerInfo
from tests.apps import templated
from tests.stack import Stack, poll

# Token ids as a tokenizer gives them (MiniLM's vocabulary), and rows for the MLP.
IDS = np.random.default_rng(1).integers(1000, 20000, size=(4, 24)).astype(np.int64)
ROWS = np.random.default_rng(2).standard_normal((32, 64)).astype(np.float32)


@asynccontextmanager
async def _provider(settings: Settings, **options: Any) -> AsyncIterator[LocalProvider]:
    provider = LocalProvider(settings, stop_grace_s=10, **options)
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        yield provider
        group.cancel_scope.cancel()


async def _spec(stack: Stack, fn: str) -> FunctionSpec:
    return await stack.session.registry.get("templated", fn)


async def _serve_one(stack: Stack, provider: LocalProvider, fn: str) -> WorkerInfo:
    """Start a worker of `fn` and wait until it is ready; what it announced."""
    worker = await provider.start(await _spec(stack, fn))
    directory = await WorkerDirectory.open(stack.session.broker)
    ready = await directory.wait_until(
        lambda ws: any(w.worker_id == worker.worker_id and w.state == "ready" for w in ws), 60
    )
    [info] = [w for w in ready if w.worker_id == worker.worker_id]
    return info


async def _stop(provider: LocalProvider, worker_id: str) -> None:
    await provider.stop(worker_id)
    with anyio.fail_after(20):
        assert await provider.exit_code(worker_id) == 0


async def _outputs() -> tuple[np.ndarray, np.ndarray]:
    return (
        np.asarray(await templated.hidden.remote.aio(IDS)),
        np.asarray(await templated.mlp.remote.aio(ROWS)),
    )


async def test_workers_forked_from_templates_compute_exactly_what_fresh_ones_do(
    templated_stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = templated_stack.session.settings
    async with _provider(settings, fork=False) as fresh:  # new interpreters, loading anew
        fresh.cores = 4  # the threads each is given: 4, then 2 (as below)
        infos = [await _serve_one(templated_stack, fresh, fn) for fn in ("hidden", "mlp")]
        assert [i.template for i in infos] == ["", ""]
        expected = await _outputs()
        for info in infos:
            await _stop(fresh, info.worker_id)

    seen: list[tuple[str, tuple[np.ndarray, np.ndarray]]] = []
    log = ""

    async def rebuilt(count: int) -> bool:
        nonlocal log
        log += capfd.readouterr().err
        return log.count("sessions rebuilt with this worker's threads") >= count

    async with _provider(settings) as provider:
        provider.cores = 4  # 4 threads, then 2: both workers rebuild their sessions
        for round_, expected_kind in enumerate(("built", "hit")):
            infos = [await _serve_one(templated_stack, provider, fn) for fn in ("hidden", "mlp")]
            assert [i.template for i in infos] == [expected_kind] * 2
            if expected_kind == "hit":  # no loading, by it or for it: the template did
                assert not {"fetch", "unpickle", "sessions"} & set(infos[0].cold_start_ms)
            seen.append((expected_kind, await _outputs()))
            # The template's sessions run on one thread; the worker builds its own with
            # the threads it was given and swaps them in (0.2 s after it is ready).
            await poll(functools.partial(rebuilt, 2 * (round_ + 1)), timeout_s=30)
            seen.append((f"{expected_kind}, rebuilt", await _outputs()))
            for info in infos:
                await _stop(provider, info.worker_id)
    for kind, (state, y) in seen:
        assert np.array_equal(state, expected[0]), f"MiniLM differs ({kind})"
        assert np.array_equal(y, expected[1]), f"MLP differs ({kind})"
        assert state.dtype == expected[0].dtype
        assert state.shape == (4, 24, 384)


async def test_setup_runs_once_in_the_template_and_its_state_reaches_every_worker(
    templated_stack: Stack,
) -> None:
    async with _provider(templated_stack.session.settings) as provider:
        first = await _serve_one(templated_stack, provider, "scaled")
        value, made_by = await templated.scaled.remote.aio(5)
        assert value == 15
        assert made_by not in (first.pid, 0)  # setup ran in the template, not the worker
        await _stop(provider, first.worker_id)
        second = await _serve_one(templated_stack, provider, "scaled")
        assert second.template == "hit"
        assert await templated.scaled.remote.aio(2) == [6, made_by]  # the same template
        assert "ready" in provider.templates.book.states().values()
        await _stop(provider, second.worker_id)


async def test_a_setup_that_leaves_a_thread_running_gets_no_template(
    templated_stack: Stack,
) -> None:
    """A fork keeps only the forking thread: such a template is refused, once, and its
    workers load the function themselves, as before."""
    async with _provider(templated_stack.session.settings) as provider:
        spec = await _spec(templated_stack, "threaded")
        for _ in range(2):
            info = await _serve_one(templated_stack, provider, "threaded")
            assert info.template == ""
            assert {"fetch", "unpickle", "setup"} <= set(info.cold_start_ms)
            assert await templated.threaded.remote.aio(1) == 2
            await _stop(provider, info.worker_id)
        reason = provider.templates.book.failure(template_key(spec, {}))
        assert "thread" in reason
        assert "setup" in reason


async def test_least_recently_used_templates_go_past_the_memory_budget(
    templated_stack: Stack,
) -> None:
    settings = msgspec.structs.replace(templated_stack.session.settings, template_memory_mb=1.0)
    async with _provider(settings) as provider:
        scaled_key = template_key(await _spec(templated_stack, "scaled"), {})
        info = await _serve_one(templated_stack, provider, "scaled")
        await _stop(provider, info.worker_id)
        info = await _serve_one(
            templated_stack, provider, "mlp"
        )  # its template pushes the other out
        await _stop(provider, info.worker_id)
        states = provider.templates.book.states()
        assert scaled_key not in states
        assert list(states.values()) == ["ready"]
        info = await _serve_one(templated_stack, provider, "scaled")
        assert info.template == "built"  # built anew: the first was let go
        await _stop(provider, info.worker_id)


async def test_templates_built_at_deploy_serve_the_first_worker(templated_stack: Stack) -> None:
    settings = msgspec.structs.replace(templated_stack.session.settings, templates="deploy")
    async with _provider(settings) as provider:
        spec = await _spec(templated_stack, "mlp")
        provider.prepare(spec)  # as the scaler does when it learns of a function
        key = template_key(spec, {})

        async def built() -> bool:
            return provider.templates.book.states().get(key) == "ready"

        await poll(built, timeout_s=60)
        info = await _serve_one(templated_stack, provider, "mlp")
        assert info.template == "hit"
        assert "sessions" not in info.cold_start_ms
        await _stop(provider, info.worker_id)


async def test_templates_are_off_when_asked(templated_stack: Stack) -> None:
    settings = msgspec.structs.replace(templated_stack.session.settings, templates="off")
    async with _provider(settings) as provider:
        info = await _serve_one(templated_stack, provider, "mlp")
        assert info.template == ""
        assert "sessions" in info.cold_start_ms
        worker: ProvidedWorker = provider.workers()[0]
        assert worker.pid == info.pid
        await _stop(provider, info.worker_id)
