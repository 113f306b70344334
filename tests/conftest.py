"""Shared fixtures: a small synthetic face collection in each layout, and a tiny model.

The synthetic "faces" are drawn with PIL (skin-coloured ellipse, eyes, mouth, optional
glasses with dark or light frames) so the tests need no downloaded data and run in seconds.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
# Debian's chromium for the browser tests and benchmark (`playwright install` cannot download one here).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
ATTRIBUTES = ["Eyeglasses", "Male", "Smiling", "Young"]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the decoded-image cache of the tests away from the user's."""
    os.environ["VAE_DEMO_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def draw_face(rng: random.Random, glasses: str | None, male: bool, smiling: bool, size: int = 250) -> Image.Image:
    """A crude face, roughly where LFW's deep-funneled photos have theirs."""
    background = tuple(rng.randrange(60, 200) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(image)
    skin = (rng.randrange(170, 240), rng.randrange(120, 190), rng.randrange(90, 160))
    d.ellipse((78, 55, 172, 200), fill=skin)
    hair = (30, 20, 10) if male else (120, 80, 30)
    d.chord((74, 45, 176, 120), 180, 360, fill=hair)
    for x in (105, 145):
        d.ellipse((x - 7, 102, x + 7, 112), fill=(255, 255, 255))
        d.ellipse((x - 3, 104, x + 3, 110), fill=(40, 30, 20))
    if glasses:
        colour = (15, 15, 15) if glasses == "dark" else (225, 200, 120)
        width = 5 if glasses == "dark" else 2
        for x in (105, 145):
            d.rectangle((x - 15, 96, x + 15, 118), outline=colour, width=width)
        d.line((120, 106, 130, 106), fill=colour, width=width)
    d.arc((105, 145, 145, 175 if smiling else 160), 0, 180, fill=(150, 40, 40), width=4)
    return image


def make_lfw(root: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """An LFW-layout collection: images/<Person>/<Person>_0001.jpg, attributes.csv, frames.csv."""
    rng = random.Random(seed)
    rows, frames = [], []
    for split, n in per_split.items():
        for i in range(n):
            person = f"{split.title()}_Person{i:03d}"
            glasses = rng.choice([None, None, "dark", "light"])
            male, smiling, young = rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5
            path = root / "images" / person / f"{person}_0001.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_face(rng, glasses, male, smiling).save(path, quality=90)
            probs = {"Eyeglasses": glasses is not None, "Male": male, "Smiling": smiling, "Young": young}
            rows.append(
                {"image": f"{person}/{person}_0001.jpg", "person": person, "split": split}
                | {k: f"{0.97 if v else 0.02:.3f}" for k, v in probs.items()}
            )
            if glasses:
                frames.append({"image": rows[-1]["image"], "frame": glasses, "raters": 2})
    with open(root / "attributes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "person", "split", *ATTRIBUTES])
        writer.writeheader()
        writer.writerows(rows)
    with open(root / "frames.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "frame", "raters"])
        writer.writeheader()
        writer.writerows(frames)
    return root


@pytest.fixture(scope="session")
def lfw_root(tmp_path_factory) -> Path:
    return make_lfw(tmp_path_factory.mktemp("lfw"), {"train": 96, "val": 24, "test": 24})


# 32 px down to a 4 x 4 grid of codes, 2 numbers per cell.
TINY_MODEL_FLAGS = ["--image-size", "32", "--channels", "8", "16", "32", "--latent-dim", "32", "--res-blocks", "1"]


def run_train(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """train.py in a fresh interpreter with one thread, as a user would run it."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True, **kwargs
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int, field: str = "VmHWM") -> float:
    """A process's memory from /proc: VmHWM is its peak resident size, VmRSS the current one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def start_app(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str, list[str]]:
    """Launch app.py on a free loopback port; returns the process, its URL and its output so far."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), *args],
        cwd=ROOT,
        env=os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"} | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise RuntimeError("app.py exited:\n" + "".join(lines))
        lines.append(line)
        if "Running on local URL" in line:
            # Keep reading its output, so a chatty app never blocks on a full pipe.
            threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
            return process, f"http://127.0.0.1:{port}/", lines
    process.kill()
    raise RuntimeError("app.py did not start in 120 s:\n" + "".join(lines))


@pytest.fixture(scope="session")
def app_server():
    """One app process (the bundled model) shared by the API, hostile-input and browser tests."""
    process, url, _ = start_app()
    yield process, url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def app_url(app_server) -> str:
    return app_server[1]


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)
