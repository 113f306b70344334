"""The app's HTTP API through gradio_client, against the real app on loopback (python app.py)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import start_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from vae_demo.guide import OWN_STRENGTH_GRID


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


SHOWCASE = ["Between two photos", "Paul_Krueger_0001.jpg", "Ron_Dittemore_0008.jpg", "Paul_Krueger_0001.jpg", None]
INTERPOLATE = ["Example", "Paul_Bremer_0008.jpg", None, 1, "Random face", "Laura_Bush_0037.jpg", None, 7, "slerp", 6]


def test_sample_is_seeded(client):
    first = client.predict(3, 0.8, 4, "fitted", api_name="/sample")
    again = client.predict(3, 0.8, 4, "fitted", api_name="/sample")
    other = client.predict(4, 0.8, 4, "prior", api_name="/sample")
    assert len(first) == 4 and pixels(first[0]["image"]).shape == (128, 128, 3)
    assert np.array_equal(pixels(first[0]["image"]), pixels(again[0]["image"]))
    assert not np.array_equal(pixels(first[0]["image"]), pixels(other[0]["image"]))
    assert len(client.predict(1, 0.5, 64, "fitted", api_name="/sample")) == 64


def test_reconstruct_an_example(client):
    crop, recon, note = client.predict(None, "Paul_Krueger_0001.jpg", api_name="/reconstruct")
    assert pixels(crop).shape == pixels(recon).shape == (128, 128, 3)
    assert "PSNR" in note and "Face found" in note


def test_reconstruct_an_upload_without_a_face_says_so(client, tmp_path):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(noise)
    _, recon, note = client.predict(handle_file(str(noise)), None, api_name="/reconstruct")
    assert "No face found" in note and pixels(recon).shape == (128, 128, 3)


def test_showcase_slider_moves_from_dark_to_light(client):
    frame, strip = client.predict(*SHOWCASE, 0.0, api_name="/showcase_prepare")
    assert len(strip) == 8
    gif = client.predict(api_name="/showcase_gif")
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.n_frames >= 32
    start = client.predict(0.0, api_name="/showcase_frame")
    end = client.predict(1.0, api_name="/showcase_frame")
    assert np.abs(pixels(start) - pixels(frame)).max() <= 1  # t = 0 is where prepare left it
    assert np.abs(pixels(start) - pixels(end)).mean() > 2  # the face changed


def test_showcase_along_the_direction(client):
    frame, strip = client.predict("Along the frame-colour direction", *SHOWCASE[1:], 0.5, api_name="/showcase_prepare")
    assert len(strip) == 8 and pixels(frame).shape == (128, 128, 3)


def test_interpolation_endpoints_and_path(client):
    frame, strip = client.predict(*INTERPOLATE, 0.5, api_name="/interpolate_prepare")
    assert len(strip) == 6 and Path(client.predict("slerp", api_name="/interpolate_gif")).suffix == ".gif"
    half = client.predict(0.5, "slerp", api_name="/interpolate_frame")
    assert np.abs(pixels(half) - pixels(frame)).max() <= 1
    assert np.abs(pixels(client.predict(0.0, "slerp", api_name="/interpolate_frame")) - pixels(half)).mean() > 2


def test_arithmetic_on_groups(client):
    result, means = client.predict(
        ["Gideon_Yago_0001.jpg", "Paul_Krueger_0001.jpg"],
        ["Anne_McLellan_0003.jpg"],
        ["Laura_Bush_0037.jpg"],
        None,
        None,
        None,
        api_name="/arithmetic",
    )
    assert pixels(result).shape == (128, 128, 3) and [m["caption"] for m in means] == [
        "mean of A",
        "mean of B",
        "mean of C",
    ]
    with pytest.raises(AppError, match="Group B is empty"):
        client.predict(["Gideon_Yago_0001.jpg"], [], ["Laura_Bush_0037.jpg"], None, None, None, api_name="/arithmetic")


def test_attribute_sliders_change_the_face(client):
    client.predict("Laura_Bush_0037.jpg", None, api_name="/edit_prepare")
    plain = client.predict(0, 0, 0, 0, 0, False, api_name="/edit")
    glasses = client.predict(1.5, 0, 0, 0, 0, False, api_name="/edit")
    assert np.abs(pixels(plain) - pixels(glasses)).mean() > 1
    assert np.array_equal(pixels(plain), pixels(client.predict(0, 0, 0, 0, 0, True, api_name="/edit")))
    held = client.predict(1.5, 0, 0, 0, 0, True, api_name="/edit")  # the bundled guide steers it
    assert np.abs(pixels(held) - pixels(glasses)).mean() > 0.5


def test_just_enough_glasses_sets_the_slider_to_a_strength_on_the_grid_and_keeps_the_sex_call(client):
    client.predict("Laura_Bush_0037.jpg", None, api_name="/edit_prepare")
    strength, keep_sex = client.predict(api_name="/own_strength")
    assert strength in OWN_STRENGTH_GRID and keep_sex is True


def _bad_uploads(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["text"] = tmp_path / "notes.png"
    files["text"].write_text("this is not an image\n" * 20)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buffer, "JPEG")
    files["truncated"] = tmp_path / "truncated.jpg"
    files["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    files["tiny"] = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (200, 150, 120)).save(files["tiny"])
    files["huge"] = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(files["huge"])
    return files


@pytest.mark.parametrize("kind", ["text", "truncated", "tiny", "huge"])
def test_bad_uploads_get_a_clear_message_and_the_server_stays_up(client, tmp_path, kind):
    path = _bad_uploads(tmp_path)[kind]
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(path)), None, api_name="/reconstruct")
    message = str(error.value)
    assert any(words in message for words in ("could not be read", "pixels", "at least 16")), message
    assert "Traceback" not in message
    assert len(client.predict(0, 0.8, 1, "fitted", api_name="/sample")) == 1  # still serving


def test_unreachable_hub_falls_back_to_the_bundled_model_visibly():
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9
    started = time.time()
    process, url, lines = start_app("--model", "someone/face-vae", env=env)
    try:
        assert time.time() - started < 60
        output = "".join(lines)
        assert "Could not load the Hub repo someone/face-vae" in output and "bundled model" in output
        page = Client(url, verbose=False).predict(0, 0.8, 1, "fitted", api_name="/sample")
        assert len(page) == 1
    finally:
        process.terminate()
        process.wait(timeout=30)
