"""What `make image-test` asks of a running container, over HTTP, with the project's own client.

    python -m deploy.image_check ready    URL [--within S]
    python -m deploy.image_check answers  URL          # classify, energy, V2 infer
    python -m deploy.image_check routes   URL          # every route class (the image diet's guard)
    python -m deploy.image_check sigterm  URL -- CMD…   # requests in flight, then CMD (the SIGTERM)
    python -m deploy.image_check spread   URL --replicas N [-- CMD…]  # CMD half-way through

Every check prints what it measured and exits non-zero on the first wrong answer. The digits are
real MNIST test images (MLDM_MNIST_DIR), the energies are checked against the exact solver of
`data.schrodinger` run here, on the host, not by the server.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from data.mnist import default_mnist_dir, read_idx
from data.schrodinger import sample_potentials, solve_ground_state
from service.client import Client, ServiceError
from service.tasks import model_names
from training import digit_sets

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


def _upload(image: Image.Image, fmt: str, **save: object) -> dict[str, tuple[str, bytes, str]]:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return {"file": (f"upload.{fmt.lower()}", buffer.getvalue(), f"image/{fmt.lower()}")}


def _dark_on_light(image: np.ndarray) -> np.ndarray:
    """An MNIST digit (light on dark, uint8) as a 4x bigger dark-on-light picture, as a photo."""
    return 255 - np.kron(np.pad(image, 5), np.ones((4, 4), np.uint8))


def _expect(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code != 200:
        _fail(f"{what}: {response.status_code} {response.text[:300]}")
    return response


def routes(url: str) -> None:
    """One request of every route class, answers checked: what the Dockerfile's diet must keep
    working (scipy in the exact energies, Pillow's decoders, scikit-image in /digits/read,
    every committed model, the .npy and compressed bodies, the pages, /metrics)."""
    images, labels = _mnist(DIGITS)
    V = sample_potentials(4, seed=5)
    exact, densities = solve_ground_state(V)
    with Client(url, timeout=60) as client, httpx.Client(base_url=url, timeout=60) as http:
        for mode in ("exact", "auto"):
            body = _expect(
                http.post(
                    "/api/v1/energy/from-potential", json={"potentials": V.tolist(), "mode": mode}
                ),
                f"energy mode={mode}",
            ).json()
            error = float(np.abs(np.asarray(body["energies"]) - exact).max())
            print(f"energy mode={mode}: max |E - E_exact| = {error * 1e3:.3f} mHa")
            if error > ENERGY_TOLERANCE_HA:
                _fail(f"energy mode={mode}: error {error:.4f} Ha")
        solution = client.exact(V)
        if not np.allclose(solution.energies, exact, atol=1e-6):
            _fail(f"exact: {solution.energies} != {exact}")
        # E[n] is a different functional (the committed card quotes its own error): answered and
        # finite is what the diet must keep.
        from_density = client.energy_from_density(densities).energies
        print(f"energy from density: {np.round(from_density, 3).tolist()} Ha; exact solver ok")
        if from_density.shape != (4,) or not np.isfinite(from_density).all():
            _fail(f"energy from density: {from_density}")

        codes = client.compress(images[:4])
        restored = client.decompress(codes)
        mse = float(((restored - images[:4] / 255.0) ** 2).mean())
        print(f"compress/decompress: {len(codes[0])} bytes per digit, MSE {mse:.4f}")
        if mse > 0.05:
            _fail(f"compress/decompress: MSE {mse}")

        # Uploads in every decoder path: PNG (grey, 16-bit, palette), JPEG with an EXIF rotation.
        digit, label = _dark_on_light(images[0]), int(labels[0])
        grey = Image.fromarray(digit)
        uploads = {
            "PNG": _upload(grey, "PNG"),
            "16-bit PNG": _upload(Image.fromarray(digit.astype(np.uint16) * 257), "PNG"),
            "palette PNG": _upload(grey.convert("RGB").convert("P"), "PNG"),
            "JPEG": _upload(grey, "JPEG", quality=95),
        }
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": stored turned the other way
        uploads["JPEG+EXIF"] = _upload(grey.rotate(90, expand=True), "JPEG", quality=95, exif=exif)
        for name, files in uploads.items():
            got = _expect(http.post("/api/v1/digits/classify/image", files=files), name).json()
            answer = [p["digit"] for p in got["predictions"]]
            print(f"classify/image {name}: {answer} (label {label})")
            if answer != [label]:
                _fail(f"classify/image {name}: {answer}, expected [{label}]")

        row, _ = digit_sets.mnist_row(images[:5] / np.float32(255), np.random.default_rng(1))
        text = _expect(
            http.post("/api/v1/digits/read", files=_upload(Image.fromarray(row), "PNG")), "read"
        ).json()["text"]
        print(f"digits/read: {text!r} (labels {''.join(map(str, labels[:5]))})")
        if text != "".join(map(str, labels[:5])):
            _fail(f"digits/read: {text!r}")

        # .npy both ways, and a gzip-compressed JSON body.
        buffer = io.BytesIO()
        np.save(buffer, images[:8])
        npy = _expect(
            http.post(
                "/api/v1/digits/classify?scale=byte",
                content=buffer.getvalue(),
                headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
            ),
            "classify .npy",
        )
        if npy.headers["content-type"] != "application/x-npy":
            _fail(f"classify .npy: answered {npy.headers['content-type']}")
        body = gzip.compress(json.dumps({"images": images[:8].tolist(), "scale": "byte"}).encode())
        zipped = _expect(
            http.post(
                "/api/v1/digits/classify",
                content=body,
                headers={"content-type": "application/json", "content-encoding": "gzip"},
            ),
            "classify gzip",
        ).json()
        answer = [p["digit"] for p in zipped["predictions"]]
        if answer != labels[:8].tolist():
            _fail(f"classify gzip: {answer}")
        print("classify .npy and gzip bodies: right")

        # Every committed model through V2 binary and TF Serving's REST API.
        latent = client.infer(
            "digit_encoder", {"images": (images[:2] / np.float32(255))[..., None]}, binary=True
        )
        print(f"v2 binary: digit_encoder outputs {sorted(latent.outputs)}")
        for model in model_names():
            meta = client.metadata(model)
            print(f"metadata {model}: {sorted(meta)}")
        predict = _expect(
            http.post(
                "/v1/models/energy_from_potential:predict",
                json={"instances": V.astype(np.float32).tolist()},
            ),
            "tfserving predict",
        ).json()
        print(f"tfserving predict: {len(predict['predictions'])} predictions")

        for page in ("/docs", "/redoc", "/demo/", "/metrics", "/api/v1/models", "/v2/models/stats"):
            _expect(http.get(page), page)
        print("pages: /docs /redoc /demo/ /metrics /api/v1/models /v2/models/stats answer 200")


def sigterm(url: str, command: list[str], requests: int) -> None:
    """`requests` slow calls in flight when `command` sends SIGTERM: all must be answered, and
    some of them after the signal (else nothing was in flight and the check proved nothing)."""
    # 1,024 potentials a call: ~0.25 s of solver CPU each, one call at a time per solver thread,
    # so the burst outlasts the signal (64 a call were all answered before it was sent).
    V = sample_potentials(1024, seed=7)
    started = threading.Event()
    sent = collections.Counter[str]()
    lock = threading.Lock()
    answered_at: list[float] = []

    def call(_: int) -> str:
        with Client(url, timeout=60, retries=0) as client:
            with lock:
                sent["sent"] += 1
                if sent["sent"] == requests:
                    started.set()
            try:
                client.exact(V)
                answered_at.append(time.monotonic())
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
    after = sum(t > signalled for t in answered_at)
    last = max(answered_at, default=signalled) - signalled
    print(
        f"sigterm: {requests} requests sent, answers {dict(outcomes)}, {after} of them after the "
        f"signal, the last {last:.1f} s after it"
    )
    if outcomes["ok"] != requests:
        _fail(f"sigterm: not every request in flight was answered: {dict(outcomes)}")
    if not after:
        _fail("sigterm: every answer came before the signal: nothing was in flight")


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
                tried = response.headers.get("x-upstream", "?")
                failures.append(f"#{index}: HTTP {response.status_code} (tried {tried})")
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
    parser.add_argument("check", choices=["ready", "answers", "routes", "sigterm", "spread"])
    parser.add_argument("url")
    parser.add_argument("--within", type=float, default=180.0)
    parser.add_argument("--requests", type=int, default=8)
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
    elif args.check == "routes":
        routes(args.url)
    elif args.check == "sigterm":
        sigterm(args.url, command, args.requests)
    else:
        spread(args.url, args.replicas, args.total, command or None, args.idle)


if __name__ == "__main__":
    main()
