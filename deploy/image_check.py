"""What `make image-test` asks of a running container, over HTTP, with the project's own client.

    python -m deploy.image_check ready    URL [--within S]
    python -m deploy.image_check answers  URL          # classify, energy, V2 infer
    python -m deploy.image_check sigterm  URL -- CMD…   # requests in flight, then CMD (the SIGTERM)
    python -m deploy.image_check spread   URL --replicas N [-- CMD…]  # CMD half-way through

Every check prints what it measured and exits non-zero on the first wrong answer. The digits are
real MNIST test images (MLDM_MNIST_DIR), the energies are checked against the exact solver of
`data.schrodinger` run here, on the host, not by the server.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from data.mnist import default_mnist_dir, read_idx
from data.schrodinger import sample_potentials, solve_ground_state
from service.client import Client, ServiceError

#: The first test digits; the committed classifier gets every one of them right (a wrong answer
#: here means the image serves something else than the committed model).
DIGITS = 20
#: |predicted - exact| per system, Hartree: the committed E[V] model's test RMSE is 0.40 mHa.
ENERGY_TOLERANCE_HA = 5e-3


def _fail(message: str) -> None:
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def _mnist(count: int) -> tuple[np.ndarray, np.ndarray]:
    directory = default_mnist_dir()
    images = read_idx(Path(directory) / "t10k-images-idx3-ubyte.gz")[:count]
    labels = read_idx(Path(directory) / "t10k-labels-idx1-ubyte.gz")[:count]
    return images.astype(np.uint8), labels.astype(np.int64)


def ready(url: str, within_s: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                print(f"ready: /v2/health/ready 200 after {time.monotonic() - start:.1f} s")
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    _fail(f"{url}/v2/health/ready not 200 within {within_s:.0f} s")


def answers(url: str) -> None:
    images, labels = _mnist(DIGITS)
    with Client(url, timeout=60) as client:
        digits = client.classify(images).digits
        wrong = int((digits != labels).sum())
        print(f"classify: {DIGITS - wrong}/{DIGITS} real MNIST test digits right")
        if wrong:
            _fail(f"classify: labels {labels.tolist()}, answers {digits.tolist()}")

        V = sample_potentials(8, seed=123)
        exact, _ = solve_ground_state(V)
        predicted = client.energy_from_potential(V).energies
        error = float(np.abs(predicted - exact).max())
        print(f"energy: 8 potentials, max |E_model - E_exact| = {error * 1e3:.2f} mHa")
        if error > ENERGY_TOLERANCE_HA:
            _fail(f"energy: error {error:.4f} Ha above {ENERGY_TOLERANCE_HA} Ha")

        batch = (images / np.float32(255)).astype(np.float32)[..., np.newaxis]
        inference = client.infer("digit_classifier", {"images": batch}, binary=False)
        v2_digits = inference.outputs["probabilities"].argmax(axis=1)
        print(
            f"v2 infer: {int((v2_digits == labels).sum())}/{DIGITS} digits right "
            f"(model {inference.model_name} v{inference.model_version})"
        )
        if not np.array_equal(v2_digits, labels):
            _fail(f"v2 infer: labels {labels.tolist()}, answers {v2_digits.tolist()}")


def sigterm(url: str, command: list[str], requests: int) -> None:
    """`requests` slow-ish calls in flight when `command` sends SIGTERM: all must be answered."""
    V = sample_potentials(64, seed=7)
    started = threading.Event()
    sent = collections.Counter[str]()
    lock = threading.Lock()

    def call(_: int) -> str:
        with Client(url, timeout=60, retries=0) as client:
            with lock:
                sent["sent"] += 1
                if sent["sent"] == requests:
                    started.set()
            try:
                client.exact(V)  # the exact solver: ~0.1-1 s of server CPU per call
                return "ok"
            except ServiceError as error:
                return f"{type(error).__name__}: {error}"

    with ThreadPoolExecutor(requests) as pool:
        futures = [pool.submit(call, i) for i in range(requests)]
        started.wait(30)
        time.sleep(0.3)  # let them reach the server
        signalled = time.monotonic()
        subprocess.run(command, check=True, capture_output=True)
        outcomes = collections.Counter(f.result() for f in futures)
    print(
        f"sigterm: {requests} requests in flight, answers {dict(outcomes)}, "
        f"last answer {time.monotonic() - signalled:.1f} s after the signal"
    )
    if outcomes["ok"] != requests:
        _fail(f"sigterm: not every request in flight was answered: {dict(outcomes)}")


def spread(
    url: str, replicas: int, total: int, kill: list[str] | None, idle_s: float = 0.0
) -> None:
    """`total` requests through the balancer: each replica must answer some, none may fail, even
    when `kill` stops one replica half-way.

    With `idle_s`, a first burst opens the balancer's keep-alive connections to every replica,
    then nothing is sent for `idle_s` seconds - longer than the service's keep-alive - so the
    measured requests meet connections the replicas have closed meanwhile (the race that makes a
    balancer answer 502 when its idle timeout is longer than the server's)."""
    potentials = sample_potentials(4, seed=3)
    seen = collections.Counter[str]()
    failures: list[str] = []
    lock = threading.Lock()

    def call(index: int) -> None:
        try:
            response = httpx.post(
                f"{url}/api/v1/energy/from-potential",
                json={"potentials": potentials.tolist()},
                timeout=60,
            )
        except httpx.TransportError as error:
            with lock:
                failures.append(f"#{index}: {type(error).__name__}: {error}")
            return
        with lock:
            if response.status_code != 200:
                failures.append(f"#{index}: HTTP {response.status_code} {response.text[:200]}")
            else:
                seen[response.headers.get("x-upstream", "?")] += 1

    if idle_s > 0:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(call, range(-4 * replicas, 0)))
        time.sleep(idle_s)
    killer: threading.Thread | None = None
    with ThreadPoolExecutor(8) as pool:
        for index in range(total):
            if kill and index == total // 2:
                killer = threading.Thread(target=subprocess.run, args=(kill,), daemon=True)
                killer.start()
            pool.submit(call, index)
    if killer is not None:
        killer.join(60)
    print(f"spread: {total} requests, {len(failures)} failed, answers by replica {dict(seen)}")
    if failures:
        _fail("spread: " + "; ".join(failures[:5]))
    if len(seen) < replicas:
        _fail(f"spread: {len(seen)} replicas answered, expected {replicas}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.image_check")
    parser.add_argument("check", choices=["ready", "answers", "sigterm", "spread"])
    parser.add_argument("url")
    parser.add_argument("--within", type=float, default=180.0)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--total", type=int, default=300)
    parser.add_argument("--idle", type=float, default=0.0, help="spread: idle seconds first")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after `--` is a command to run (the SIGTERM, or the replica kill for `spread`).
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.check == "ready":
        ready(args.url, args.within)
    elif args.check == "answers":
        answers(args.url)
    elif args.check == "sigterm":
        sigterm(args.url, command, args.requests)
    else:
        spread(args.url, args.replicas, args.total, command or None, args.idle)


if __name__ == "__main__":
    main()
