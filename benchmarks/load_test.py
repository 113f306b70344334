"""Many users at once: concurrent gradio_client sessions against the app on loopback.

    python benchmarks/load_test.py [--clients 16] [--requests 40] [--max-seconds 900]

Starts `python app.py` on 127.0.0.1, warms it up with one client, then runs `--clients`
threads, each its own session making `--requests` mixed requests (showcase slider steps,
samples of 16, reconstructions of freshly altered photos, GIFs). Bounded in count and in
time; it never talks to anything but the app it started. Prints errors (and "queue full"
answers separately), median and p95 latency per request kind, and the server's resident
memory: after the one-client warm-up, once every session has made `--warmup` requests
(the app's threads and heaps have then seen concurrent use), and at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from app_latency import SHOWCASE, _altered_photos  # noqa: E402
from conftest import free_port, memory_mb  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="concurrent sessions (default: 16)")
    parser.add_argument("--requests", type=int, default=40, help="requests per session (default: 40)")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long (default: 900)")
    parser.add_argument(
        "--warmup", type=int, default=4, help="requests per session before memory is taken again (default: 4)"
    )
    args = parser.parse_args()

    port = free_port()
    app = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"},
    )  # fmt: skip
    try:
        while "Running on local URL" not in (line := app.stdout.readline()):
            if not line and app.poll() is not None:
                raise SystemExit("app.py exited before it started")
        server_log = Path(tempfile.mkdtemp(prefix="vae_demo_load_")) / "app.log"

        def drain() -> None:  # keep the pipe from filling, and keep what the server said
            with open(server_log, "w") as log:
                for line in app.stdout:
                    log.write(line)
                    log.flush()

        threading.Thread(target=drain, daemon=True).start()
        url = f"http://127.0.0.1:{port}/"
        photos = _altered_photos(args.clients * args.requests)
        warm = Client(url, verbose=False)
        warm.predict(*SHOWCASE, 0.0, api_name="/showcase_prepare")
        for i in range(5):
            warm.predict(i / 4, api_name="/showcase_frame")
            warm.predict(i, 0.8, 16, "fitted", api_name="/sample")
            warm.predict(handle_file(str(photos[-1 - i])), None, api_name="/reconstruct")
            warm.predict(api_name="/showcase_gif")
        memory_one_client = memory_mb(app.pid, "VmRSS")

        latencies: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, int] = defaultdict(int)
        first_errors: dict[str, str] = {}
        deadline = time.time() + args.max_seconds
        lock = threading.Lock()
        done = [0]
        warmed_up = threading.Event()

        def record_error(key: str, error: Exception) -> None:
            """Count it, and keep the first message of each kind for the report."""
            with lock:
                errors[key] += 1
                first_errors.setdefault(key, f"{type(error).__name__}: {error}"[:300])

        def session(index: int) -> None:
            rng = random.Random(index)
            try:
                client = Client(url, verbose=False)
                client.predict(*SHOWCASE, 0.0, api_name="/showcase_prepare")
            except Exception as error:  # counted, so that a lost session cannot go unnoticed
                record_error("session start", error)
                return
            calls = {
                "slider step": lambda: client.predict(rng.random(), api_name="/showcase_frame"),
                "sample of 16": lambda: client.predict(rng.randrange(10**6), 0.8, 16, "fitted", api_name="/sample"),
                "reconstruction": lambda: client.predict(
                    handle_file(str(photos[index * args.requests + rng.randrange(args.requests)])),
                    None,
                    api_name="/reconstruct",
                ),  # fmt: skip
                "GIF": lambda: client.predict(api_name="/showcase_gif"),
            }
            kinds = ["slider step"] * 6 + ["sample of 16", "reconstruction", "GIF"]
            for _ in range(args.requests):
                if time.time() > deadline:
                    return
                kind = rng.choice(kinds)
                tic = time.perf_counter()
                try:
                    calls[kind]()
                    with lock:
                        latencies[kind].append((time.perf_counter() - tic) * 1000)
                except Exception as error:
                    record_error("queue full" if "queue is full" in str(error).lower() else kind, error)
                with lock:
                    done[0] += 1
                    if done[0] >= args.clients * args.warmup:
                        warmed_up.set()

        started = time.time()
        threads = [threading.Thread(target=session, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        while not warmed_up.wait(0.1) and any(thread.is_alive() for thread in threads):
            pass
        memory_before = memory_mb(app.pid, "VmRSS")
        for thread in threads:
            thread.join()
        elapsed = time.time() - started
        memory_after = memory_mb(app.pid, "VmRSS")
        peak = memory_mb(app.pid)
    finally:
        app.terminate()
        app.wait(timeout=30)

    total = sum(len(v) for v in latencies.values())
    print(f"{args.clients} sessions x {args.requests} requests in {elapsed:.0f} s; {total} answered, "
          f"errors: {dict(errors) or 0}\n")  # fmt: skip
    for kind, message in first_errors.items():
        print(f"first {kind} error: {message}")
    print(f"server log: {server_log}")
    print("| request | n | median (ms) | p95 (ms) |")
    print("|---|---|---|---|")
    for kind, values in sorted(latencies.items()):
        print(f"| {kind} | {len(values)} | {statistics.median(values):.0f} | {np.percentile(values, 95):.0f} |")
    growth = (memory_after - memory_before) / memory_before * 100
    print(f"\nServer memory: {memory_one_client:.0f} MB after the one-client warm-up, {memory_before:.0f} MB once "
          f"every session had made {args.warmup} requests, {memory_after:.0f} MB after the load "
          f"({growth:+.1f}% since the concurrent warm-up); peak {peak:.0f} MB")  # fmt: skip
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
