"""Adaptive batching: merged answers equal single ones, order kept, failures and cancellation
isolated. No timing is asserted. Merging is deterministic here: `asyncio.gather` starts every
submit (each queues its request) before the batcher's worker task first runs, so with no wait
the worker finds them all queued; the cancellation test waits for a batch to fill instead."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.backends.select import Plan
from service.batching import AdaptiveBatcher, BatchFunction, cancel_and_wait, padded_size
from service.dataplane import DataPlane
from service.registry import ModelRegistry
from service.runtime import ModelRunner
from service.settings import Settings
from service.tasks import digits, energy, model_specs
from tests.service.helpers import images, potentials


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    pool = ThreadPoolExecutor(max_workers=2)
    yield pool  # type: ignore[misc]
    pool.shutdown()


def _doubling(calls: list[int]) -> BatchFunction:
    def function(batch: np.ndarray) -> Mapping[str, np.ndarray]:
        calls.append(int(batch.shape[0]))
        if np.isnan(batch).any():
            raise ValueError("NaN in batch")
        return {"y": batch * 2}

    return function


async def test_batcher_merges_concurrent_requests_in_order(executor: ThreadPoolExecutor) -> None:
    calls: list[int] = []
    batcher = AdaptiveBatcher(_doubling(calls), executor, 64, max_wait_s=0.0)
    arrays = [np.full((i % 3 + 1, 2), float(i)) for i in range(10)]
    results = await asyncio.gather(*(batcher.submit(a) for a in arrays))
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result["y"], array * 2)
    assert calls == [sum(a.shape[0] for a in arrays)]  # one merged call
    assert batcher.stats.requests == 10 and batcher.stats.batches == 1
    await batcher.close()


async def test_batcher_respects_max_batch_size(executor: ThreadPoolExecutor) -> None:
    calls: list[int] = []
    batcher = AdaptiveBatcher(_doubling(calls), executor, 4, max_wait_s=0.0)
    arrays = [np.full((1, 2), float(i)) for i in range(10)]
    results = await asyncio.gather(*(batcher.submit(a) for a in arrays))
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(10)]
    assert calls == [4, 4, 2]
    await batcher.close()


async def test_batcher_isolates_failing_request(executor: ThreadPoolExecutor) -> None:
    calls: list[int] = []
    batcher = AdaptiveBatcher(_doubling(calls), executor, 64, max_wait_s=0.0)
    good = [np.ones((2, 2)), np.zeros((1, 2))]
    bad = np.array([[np.nan, 1.0]])
    results = await asyncio.gather(
        batcher.submit(good[0]),
        batcher.submit(bad),
        batcher.submit(good[1]),
        return_exceptions=True,
    )
    np.testing.assert_array_equal(results[0]["y"], good[0] * 2)  # type: ignore[index]
    assert isinstance(results[1], ValueError) and str(results[1]) == "NaN in batch"
    np.testing.assert_array_equal(results[2]["y"], good[1] * 2)  # type: ignore[index]
    assert calls == [4, 2, 1, 1] and batcher.stats.fallbacks == 1
    await batcher.close()


async def test_batcher_drops_cancelled_waiting_request(executor: ThreadPoolExecutor) -> None:
    calls: list[int] = []
    batcher = AdaptiveBatcher(_doubling(calls), executor, 3, max_wait_s=30.0)
    waiting = asyncio.create_task(batcher.submit(np.ones((1, 2))))
    await asyncio.sleep(0)  # queued; the batch waits for more (up to 30 s, or 3 items)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # Two more items fill the batch with the cancelled one still queued: it must not run.
    results = await asyncio.gather(
        batcher.submit(np.full((1, 2), 5.0)), batcher.submit(np.full((2, 2), 7.0))
    )
    assert [r["y"].tolist() for r in results] == [[[10.0, 10.0]], [[14.0, 14.0]] * 2]
    assert calls == [3]
    assert batcher.stats.requests == 2
    await batcher.close()


@pytest.fixture
async def batched_service(
    tiny_registry: ModelRegistry, settings: Settings
) -> AsyncIterator[DataPlane]:
    tuned = settings.model_copy(update={"batching_enabled": True, "batch_max_wait_ms": 200.0})
    runner = ModelRunner(tuned)
    yield DataPlane(tiny_registry, tuned, runner, model_specs())
    await runner.aclose()


async def test_batched_classify_equals_unbatched(
    batched_service: DataPlane, tiny_registry: ModelRegistry
) -> None:
    batch = images(12, seed=3)
    requests = [batch[i : i + 1 + i % 2] for i in range(0, 12, 2)]
    results = await asyncio.gather(
        *(digits.classify(batched_service, r.tolist(), "unit") for r in requests)
    )
    model = tiny_registry.get("digit_classifier")
    for request, result in zip(requests, results, strict=True):
        alone = model.predict_one(request.reshape(-1, 28, 28, 1).astype(np.float32))
        # float32 dot products of 784 terms summed in another order (oneDNN blocks by batch
        # size): the logits agree to ~1e-6 relative, which the softmax turns into ~1e-5.
        np.testing.assert_allclose(result.probabilities, alone, rtol=1e-4, atol=1e-6)
    batcher = batched_service.runner.batcher(model)
    assert batcher is not None and batcher.stats.batches < len(requests)


async def test_batched_mixed_good_and_bad_requests(batched_service: DataPlane) -> None:
    V = potentials(3)
    bad = V[1].copy()
    bad[5] = np.inf
    results = await asyncio.gather(
        energy.from_potential(batched_service, V[0].tolist()),
        energy.from_potential(batched_service, bad.tolist()),
        energy.from_potential(batched_service, V[2].tolist()),
        return_exceptions=True,
    )
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert str(results[1]) == "potentials[5]: expected a finite number, received inf"
    model = batched_service.registry.get("energy_from_potential")
    expected = model.predict_one(V[[0, 2]].astype(np.float32))
    got = [results[0].energies[0], results[2].energies[0]]  # type: ignore[union-attr]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


async def test_batching_switched_off_per_model(
    tiny_registry: ModelRegistry, settings: Settings
) -> None:
    tuned = Settings(
        model_dir=settings.model_dir, batching={"digit_classifier": {"enabled": False}}
    )
    runner = ModelRunner(tuned)
    assert runner.batcher(tiny_registry.get("digit_classifier")) is None
    assert runner.batcher(tiny_registry.get("energy_from_density")) is not None
    await runner.aclose()


async def test_runner_gives_reloaded_version_object_its_own_batcher(
    tiny_registry: ModelRegistry, settings: Settings
) -> None:
    from service.registry import load_version

    runner = ModelRunner(settings)
    old = tiny_registry.get("energy_from_potential")
    new = load_version(old.name, old.version, old.path)
    old_batcher, new_batcher = runner.batcher(old), runner.batcher(new)
    assert old_batcher is not None and new_batcher is not None
    assert old_batcher is not new_batcher
    V = potentials(2).astype(np.float32)
    np.testing.assert_array_equal(await runner.run(old, V), await runner.run(new, V))
    assert runner.batcher(old) is old_batcher and runner.batcher(new) is new_batcher
    await runner.aclose()


async def test_batcher_splits_request_over_max_batch_size(executor: ThreadPoolExecutor) -> None:
    calls: list[int] = []
    batcher = AdaptiveBatcher(_doubling(calls), executor, 4, max_wait_s=0.0)
    array = np.arange(20, dtype=np.float64).reshape(10, 2)
    result = await batcher.submit(array)
    np.testing.assert_array_equal(result["y"], array * 2)
    assert calls == [4, 4, 2]
    await batcher.close()


async def test_runner_without_batching_calls_model_in_chunks(
    tiny_registry: ModelRegistry, settings: Settings
) -> None:
    tuned = Settings(model_dir=settings.model_dir, batching_enabled=False, batch_max_size=7)
    runner = ModelRunner(tuned)
    model = tiny_registry.get("energy_from_potential")
    V = potentials(30).astype(np.float32)
    assert runner.batcher(model) is None
    chunked = await runner.run(model, V)
    np.testing.assert_allclose(chunked, model.predict_one(V), rtol=1e-6)
    assert chunked.shape == (30,)
    await runner.aclose()


async def test_batcher_idle_request_runs_without_worker(executor: ThreadPoolExecutor) -> None:
    calls: list[int] = []
    batcher = AdaptiveBatcher(_doubling(calls), executor, 64, max_wait_s=0.0)
    result = await batcher.submit(np.ones((2, 2)))
    np.testing.assert_array_equal(result["y"], np.full((2, 2), 2.0))
    assert calls == [2]
    assert batcher._worker is None  # the direct path: no worker task was needed


async def test_batcher_requests_during_direct_call_form_next_batch(
    executor: ThreadPoolExecutor,
) -> None:
    calls: list[int] = []
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    def slow(batch: np.ndarray) -> Mapping[str, np.ndarray]:
        calls.append(int(batch.shape[0]))
        if len(calls) == 1:
            loop.call_soon_threadsafe(started.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        return {"y": batch * 2}

    batcher = AdaptiveBatcher(slow, executor, 64, max_wait_s=0.0)
    first = asyncio.create_task(batcher.submit(np.ones((1, 2))))
    await started.wait()  # the first (direct) call is in the pool
    others = [asyncio.create_task(batcher.submit(np.full((1, 2), float(i)))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert calls == [1]  # the others wait for the running call, as behind the worker
    release.set()
    results = await asyncio.gather(first, *others)
    assert calls == [1, 3]  # then they run as one merged batch
    for i, result in enumerate(results[1:]):
        np.testing.assert_array_equal(result["y"], np.full((1, 2), 2.0 * i))
    await batcher.close()


def test_pad_sizes_default_to_powers_of_two_up_to_the_batch_size() -> None:
    assert Settings(batch_max_size=100).pad_sizes_for("m") == (1, 2, 4, 8, 16, 32, 64, 100)
    assert Settings(batch_max_size=8).pad_sizes_for("m") == (1, 2, 4, 8)
    assert Settings(batch_pad_sizes=()).pad_sizes_for("m") == ()
    assert padded_size(3, (1, 2, 4, 8)) == 4 and padded_size(9, (1, 2, 4, 8)) == 9


async def test_padded_calls_equal_unpadded_per_item(
    tiny_registry: ModelRegistry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    for name, x in (
        ("digit_classifier", images(11, seed=4).reshape(-1, 28, 28, 1).astype(np.float32)),
        ("energy_from_potential", potentials(11).astype(np.float32)),
    ):
        model = tiny_registry.get(name)
        unpadded = {n: model.predict_one(x[:n]) for n in (3, 5, 11)}
        predict = type(model).predict

        def spy(
            self: object, inputs: Mapping[str, np.ndarray], predict: object = predict
        ) -> object:
            seen.append(next(iter(inputs.values())).shape[0])
            return predict(self, inputs)  # type: ignore[operator]

        monkeypatch.setattr(type(model), "predict", spy)
        for batching in (True, False):
            seen.clear()
            tuned = Settings(
                model_dir=settings.model_dir, batching_enabled=batching, batch_max_size=8
            )
            runner = ModelRunner(tuned)
            for n in (3, 5, 11):
                padded = await runner.run(model, x[:n])
                assert padded.shape == unpadded[n].shape
                # Padding rows never reach the answer; per item it is the unpadded answer up
                # to oneDNN's summation order for another batch size (as for merged batches).
                np.testing.assert_allclose(padded, unpadded[n], rtol=1e-4, atol=1e-6)
            # 3 -> 4, 5 -> 8, 11 -> 8 + 3 -> 8 + 4 (the last chunk of a bulk request padded too)
            assert seen == [4, 8, 8, 4], (name, batching, seen)
            await runner.aclose()
        monkeypatch.undo()


async def test_cancel_and_wait_ends_a_running_task_and_ignores_none() -> None:
    await cancel_and_wait(None)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_batcher_runs_an_inline_size_on_the_event_loop(executor: ThreadPoolExecutor) -> None:
    threads: list[int] = []

    def function(batch: np.ndarray) -> Mapping[str, np.ndarray]:
        threads.append(threading.get_ident())
        if np.isnan(batch).any():
            raise ValueError("NaN in batch")
        return {"y": batch * 2}

    batcher = AdaptiveBatcher(function, executor, 64, 0.0, inline=lambda items: items <= 1)
    one = await batcher.submit(np.ones((1, 2)))
    two = await batcher.submit(np.ones((2, 2)))
    np.testing.assert_array_equal(one["y"], np.full((1, 2), 2.0))
    np.testing.assert_array_equal(two["y"], np.full((2, 2), 2.0))
    assert threads[0] == threading.get_ident()  # batch 1: inline, on this (the loop's) thread
    assert threads[1] != threading.get_ident()  # batch 2: in a pool thread
    with pytest.raises(ValueError, match="NaN"):
        await batcher.submit(np.full((1, 2), np.nan))
    assert not batcher._busy  # a failed inline call leaves the batcher free
    again = await batcher.submit(np.ones((1, 2)))
    np.testing.assert_array_equal(again["y"], np.full((1, 2), 2.0))
    assert batcher.stats.batches == 4
    await batcher.close()


async def test_inline_burst_still_merges(executor: ThreadPoolExecutor) -> None:
    calls: list[int] = []
    batcher = AdaptiveBatcher(_doubling(calls), executor, 64, 0.0, inline=lambda items: True)
    arrays = [np.full((1, 2), float(i)) for i in range(5)]
    results = await asyncio.gather(*(batcher.submit(a) for a in arrays))
    assert calls == [5]  # the burst went to the worker as one batch, not five inline calls
    for array, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result["y"], array * 2)
    await batcher.close()


def test_runner_inlines_only_short_measured_compiled_calls(
    tiny_registry: ModelRegistry, settings: Settings
) -> None:
    model = tiny_registry.get("energy_from_potential")
    runner = ModelRunner(settings)
    assert settings.inline_max_ms == 1.0
    compiled = dataclasses.replace(model, plan=Plan(steps=((8, "onnxruntime"), (64, "tensorflow"))))
    assert not runner.inline(compiled, 1)  # not measured yet: the first call goes to a thread
    runner.admission(compiled).observe(1, 0.0003)  # 0.3 ms per item
    assert runner.inline(compiled, 1) and runner.inline(compiled, 3)
    assert not runner.inline(compiled, 4)  # 1.2 ms: over the 1 ms budget
    runner.admission(model).observe(1, 0.0001)
    assert model.backend_for(1) == "tensorflow"
    assert not runner.inline(model, 1)  # TensorFlow's call always goes to a thread
    off = ModelRunner(settings.model_copy(update={"inline_max_ms": 0.0}))
    off.admission(compiled).observe(1, 0.0001)
    assert not off.inline(compiled, 1)
    wide = ModelRunner(settings.model_copy(update={"inline_max_ms": 100.0}))
    wide.admission(compiled).observe(1, 0.0001)
    assert wide.inline(compiled, 8) and not wide.inline(compiled, 9)  # 9+: TensorFlow's
    for each in (runner, off, wide):
        each.close()


async def test_runner_runs_a_short_compiled_call_inline_with_the_same_answer(
    tiny_registry: ModelRegistry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_registry.get("energy_from_potential")
    compiled = dataclasses.replace(model, plan=Plan.single("onnxruntime"))
    compiled.backends = {"onnxruntime": model.backends["tensorflow"]}  # the call itself: TF's
    threads: list[int] = []
    real = compiled.backends["onnxruntime"].run

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        threads.append(threading.get_ident())
        return real(inputs)

    monkeypatch.setattr(compiled.backends["onnxruntime"], "run", run)
    V = potentials(1).astype(np.float32)
    for batching in (True, False):
        runner = ModelRunner(settings.model_copy(update={"batching_enabled": batching}))
        runner.admission(compiled).observe(1, 0.0001)
        out = await runner.run(compiled, V)
        np.testing.assert_allclose(out, model.predict_one(V), rtol=1e-6)
        assert threads[-1] == threading.get_ident()  # on the event loop's thread
        await runner.aclose()
