"""Hostile uploads and paths against the running app: each gets a result or a clear message.

The corpus is generated here: files that are not images, broken images, bombs, odd sizes
and modes, animations, and photos with no face or several. After all of them the server
still answers and its memory has not jumped.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import ROOT, memory_mb, start_app
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

EXAMPLE = ROOT / "assets" / "examples" / "Laura_Bush_0037.jpg"
CLEAR_MESSAGES = ("could not be read as an image", "at least 16")


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def corpus(folder: Path) -> dict[str, Path]:
    """name -> file. Names ending in '!' must be refused; the others may succeed or be refused."""
    face = Image.open(EXAMPLE).convert("RGB")
    files = {}
    (folder / "notes.png").write_text("plain text, not a picture\n" * 50)
    files["text named .png!"] = folder / "notes.png"
    (folder / "paper.png").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")
    files["PDF named .png!"] = folder / "paper.png"
    with zipfile.ZipFile(folder / "archive.png", "w") as archive:
        archive.writestr("a.txt", "zip")
    files["zip named .png!"] = folder / "archive.png"
    jpeg = io.BytesIO()
    face.save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[:2000])
    files["truncated JPEG!"] = folder / "truncated.jpg"
    corrupted = bytearray(jpeg.getvalue())
    corrupted[600:4000] = bytes(3400)  # scan data zeroed: decodes to garbage or fails
    (folder / "corrupted.jpg").write_bytes(bytes(corrupted))
    files["corrupted JPEG"] = folder / "corrupted.jpg"
    png = io.BytesIO()
    face.save(png, "PNG")
    (folder / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    files["truncated PNG!"] = folder / "truncated.png"
    files["decompression bomb!"] = _save(Image.new("1", (30000, 30000)), folder / "bomb.png")
    files["1x1!"] = _save(Image.new("RGB", (1, 1), (90, 60, 40)), folder / "dot.png")
    files["10x10000!"] = _save(Image.new("RGB", (10, 10000), (90, 60, 40)), folder / "strip.png")
    files["16-bit grey"] = _save(Image.fromarray(np.asarray(face.convert("L"), np.uint16) * 257), folder / "g16.png")
    files["CMYK JPEG"] = _save(face.convert("CMYK"), folder / "cmyk.jpg")
    files["palette"] = _save(face.convert("P"), folder / "palette.png")
    files["LA"] = _save(face.convert("LA"), folder / "la.png")
    rgba = face.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(face.size))
    files["RGBA with transparency"] = _save(rgba, folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated: displays upright after a 90 degree turn
    files["EXIF-rotated"] = _save(face.rotate(-90, expand=True), folder / "rotated.jpg", exif=exif.tobytes())
    frames = [face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    files["animated GIF"] = _save(frames[0], folder / "anim.gif", save_all=True, append_images=frames[1:])
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    files["no face"] = _save(Image.fromarray(noise), folder / "noise.png")
    group = Image.new("RGB", (520, 260), (200, 200, 200))
    group.paste(face, (0, 5))
    group.paste(Image.open(ROOT / "assets/examples/Paul_Krueger_0001.jpg").convert("RGB"), (265, 5))
    files["several faces"] = _save(group, folder / "group.jpg")
    return files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    return corpus(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize(
    "name",
    ["text named .png!", "PDF named .png!", "zip named .png!", "truncated JPEG!", "corrupted JPEG", "truncated PNG!",
     "decompression bomb!", "1x1!", "10x10000!", "16-bit grey", "CMYK JPEG", "palette", "LA", "RGBA with transparency",
     "EXIF-rotated", "animated GIF", "no face", "several faces"],
)  # fmt: skip
def test_each_hostile_upload_gets_a_result_or_a_clear_message(client, hostile, name):
    try:
        crop, recon, note = client.predict(handle_file(str(hostile[name])), None, api_name="/reconstruct")
    except AppError as error:
        message = str(error)
        assert any(words in message for words in CLEAR_MESSAGES), f"{name}: unclear message {message!r}"
        assert "Traceback" not in message and "/tmp/" not in message
        return
    assert not name.endswith("!"), f"{name} should have been refused"
    assert np.asarray(Image.open(recon)).shape[:2] == (128, 128)
    assert "PSNR" in note
    if name in ("EXIF-rotated", "several faces"):
        assert "Face found" in note, f"{name}: {note}"


def test_the_server_is_still_up_and_memory_did_not_jump(client, app_server, hostile):
    # Run the whole corpus twice more; the second pass must not grow memory much.
    pid = app_server[0].pid
    for _ in range(2):
        before = memory_mb(pid, "VmRSS")
        for path in hostile.values():
            try:
                client.predict(handle_file(str(path)), None, api_name="/reconstruct")
            except AppError:
                pass
    after = memory_mb(pid, "VmRSS")
    assert after - before < 100, f"memory grew from {before:.0f} MB to {after:.0f} MB"
    assert len(client.predict(0, 0.8, 2, "fitted", api_name="/sample")) == 2


def test_uploads_over_the_size_cap_are_refused_by_the_server(app_url, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2200, 2200, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 10 * 1024 * 1024
    with open(big, "rb") as f:  # straight to the upload route, past any client-side check
        response = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("big.png", f, "image/png")})
    assert response.status_code == 413, response.text[:200]


@pytest.mark.parametrize("path", ["/etc/passwd", str(ROOT / "app.py"), "../../../../etc/passwd"])
def test_no_input_reads_or_serves_files_outside_the_app(app_url, path):
    # A hand-made request naming a server-side file, as a hostile client could send it.
    payload = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None]}
    event = httpx.post(f"{app_url}gradio_api/call/reconstruct", json=payload).json()["event_id"]
    answer = httpx.get(f"{app_url}gradio_api/call/reconstruct/{event}", timeout=60).text
    assert "event: error" in answer and "not uploaded by a user" in answer
    assert "root:" not in answer and "import gradio" not in answer
    for url in (f"{app_url}gradio_api/file={path}", f"{app_url}file={path}"):
        response = httpx.get(url)
        assert response.status_code in (403, 404), url
        assert "root:" not in response.text and "import gradio" not in response.text


def test_an_overload_is_told_to_retry_rather_than_piling_up():
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client
    from gradio_client.utils import QueueError

    process, url, _ = start_app("--queue-size", "2", "--concurrency", "1")
    try:
        # download_files=False: this is about the queue, not about fetching 16 x 64 images at once
        clients = [Client(url, verbose=False, download_files=False) for _ in range(16)]

        def request(client):
            try:
                client.predict(0, 0.8, 64, "fitted", api_name="/sample")
                return "answered"
            except QueueError as error:
                return "busy" if "try again" in str(error) else repr(error)
            except Exception as error:  # anything else is a failure, shown in the assertion
                return repr(error)

        with ThreadPoolExecutor(len(clients)) as pool:
            outcomes = list(pool.map(request, clients))
        assert set(outcomes) == {"busy", "answered"}, outcomes
        assert len(clients[0].predict(1, 0.8, 1, "fitted", api_name="/sample")) == 1  # and it recovers
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_users_getting_the_same_picture_at_once_never_download_a_partial_file(tmp_path):
    """Gradio names an output image's cache file by its content; app.py makes its writes atomic.

    Writers keep saving one picture while a reader keeps reading its cache file: every read
    sees either no file yet or the whole picture, never a truncated one.
    """
    import threading

    from gradio import processing_utils

    import app

    app.write_image_cache_atomically()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    path = Path(processing_utils.save_pil_to_cache(image, str(tmp_path / "probe"), format="png"))
    whole = path.read_bytes()
    path.unlink()
    stop, partial_reads = threading.Event(), []

    def write() -> None:
        while not stop.is_set():
            processing_utils.save_pil_to_cache(image, str(tmp_path / "cache"), format="png")

    def read() -> None:
        target = tmp_path / "cache" / path.parent.name / path.name
        while not stop.is_set():
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                continue
            if data != whole:
                partial_reads.append(len(data))

    threads = [threading.Thread(target=write) for _ in range(4)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    threading.Event().wait(2.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert (tmp_path / "cache" / path.parent.name / path.name).read_bytes() == whole
    assert partial_reads == []
