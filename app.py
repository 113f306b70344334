"""Face VAE Studio: a Gradio app over a face variational autoencoder.

    python app.py                                  # the bundled model in assets/model
    python app.py --model me/face-vae --revision v1  # a Hub repo (falls back to the bundled model)
    VAE_DEMO_MODEL=runs/default/model python app.py  # a local folder

This file only lays out widgets and wires them to `vae_demo.studio.Studio`; the model work
lives there.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import random
import tempfile
from pathlib import Path

# No analytics calls home at start-up: the app must start at once, with or without a network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio import processing_utils  # noqa: E402

from vae_demo.guide import GUIDE_DIR, load_guide  # noqa: E402
from vae_demo.hub import ModelChoice, load_with_fallback  # noqa: E402
from vae_demo.images import ImageError, unreadable  # noqa: E402
from vae_demo.studio import DIRECTION_LABELS, EDIT_RANGE, MAX_SAMPLES, Studio  # noqa: E402

MAX_UPLOAD = "10mb"
TWO_PHOTOS, DIRECTION = "Between two photos", "Along the frame-colour direction"
EXAMPLE, UPLOAD, RANDOM = "Example", "Upload", "Random face"
# Faces are 128 px; show them larger, smoothly scaled by the browser rather than re-encoded.
CSS = ".face img { width: 100%; height: 100%; object-fit: contain; }"
# Slider drags: no overlay, the latest value wins, and no queue: the browser then sends one
# HTTP POST per step instead of joining the queue and reading its event stream (measured in
# chromium: 49 ms instead of 68 ms a step). A step is one decode, so skipping the queue's
# concurrency limit costs little.
LIVE = {"show_progress": "hidden", "trigger_mode": "always_last", "queue": False}


class PhotoInput(gr.Image):
    """An image box whose unreadable uploads become a message rather than a stack trace."""

    def get_block_name(self) -> str:
        return "image"  # the same front end as gr.Image

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception as error:  # Gradio opens the file first; say what went wrong the same way we do
            raise gr.Error(sentence(unreadable(error))) from None


def user_errors(fn):
    """Show ImageError messages (bad photo, empty group, ...) on the page."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ImageError as error:
            raise gr.Error(sentence(error)) from None

    return wrapper


def limit_heap_arenas(arenas: int = 2) -> None:
    """Let glibc keep at most `arenas` heaps, whatever the number of request threads.

    glibc gives threads their own heaps (up to 8 per core) and keeps memory freed by torch
    in each, so under concurrent requests the app's memory grew by half
    (benchmarks/load_test.py: +56% with glibc's default, +19% with 2). Not glibc
    (macOS, Windows, musl): nothing to do.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 is M_ARENA_MAX in malloc.h
    except (OSError, AttributeError):
        pass


def write_image_cache_atomically() -> None:
    """Make Gradio write output images to its cache under a temporary name, then rename them.

    Gradio (6.31) names each output image's cache file by its content and writes it in place
    (`processing_utils.save_pil_to_cache`), so when two users get the same picture at once
    (the preset showcase, the crop of the same photo) one may download the file while the
    other has just truncated it: "peer closed connection" in benchmarks/load_test.py. Gradio
    already writes other files this way (`save_file_to_cache`).
    """
    if getattr(processing_utils.save_pil_to_cache, "atomic", False):
        return

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = processing_utils.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / processing_utils.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = folder / f"{name}.{format}"
        if not path.exists():  # the name is the content's hash: an existing file is this picture
            handle, staging = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
            with os.fdopen(handle, "wb") as f:
                f.write(data)
            os.replace(staging, path)
        return str(path.resolve())

    save_pil_to_cache.atomic = True
    processing_utils.save_pil_to_cache = save_pil_to_cache


def face_view(label: str, elem_id: str | None = None, height: int = 320) -> gr.Image:
    """An output image of a face, shown larger than its 128 px (see CSS)."""
    return gr.Image(label=label, height=height, format="png", interactive=False, elem_id=elem_id, elem_classes="face")


def sentence(error: Exception) -> str:
    text = str(error)
    return text[:1].upper() + text[1:] + "."


def photo(upload: str | None, example: str | None) -> str:
    """The face to use: an upload wins over the example picker."""
    if upload:
        return upload
    if example:
        return example
    raise ImageError("pick an example face or upload a photo")


def build_app(choice: ModelChoice) -> gr.Blocks:
    write_image_cache_atomically()
    studio = Studio(choice.model, guide=load_guide(GUIDE_DIR, "the sliders cannot keep the sex call"))
    examples = [(e.label, e.name) for e in studio.examples]
    wearers = [(e.label, e.name) for e in studio.examples if e.glasses and e.frame != "sunglasses"]
    darks, lights = studio.example_names(frame="dark"), studio.example_names(frame="light")
    no_glasses = [(e.label, e.name) for e in studio.examples if not e.glasses]

    # Handlers: each calls the studio and shapes the result for its widgets -------------------
    @user_errors
    def showcase_prepare(mode, dark, light, face, upload, t):
        if mode == TWO_PHOTOS:
            a, b = studio.face(dark).z, studio.face(light).z
        else:
            a, b = studio.frame_colour_endpoints(studio.face(photo(upload, face)).z)
        return [a, b], studio.path(a, b, t), studio.strip(a, b, 8)

    def showcase_frame(codes, t):
        return studio.path(codes[0], codes[1], t) if codes else None

    @user_errors
    def sample(seed, temperature, n, sampler):
        return studio.samples(int(seed), temperature, int(n), sampler)

    @user_errors
    def reconstruct(upload, example):
        crop, recon, psnr_db, how = studio.reconstruct(photo(upload, example))
        note = {
            "eyes": "Face found; aligned by the eyes.",
            "face": "Face found; eyes not found, so framed by the face box.",
            "centre": "**No face found**: showing a centre crop. A frontal, well-lit face works best.",
        }[how]
        return crop, recon, f"**PSNR {psnr_db:.1f} dB** (higher is closer). {note}"

    def send_face(upload, example):
        """The reconstructed face becomes the face of the showcase, of interpolation A and of the sliders."""
        if upload:
            return DIRECTION, gr.update(), upload, UPLOAD, gr.update(), upload, gr.update(), upload
        recolourable = example in [name for _, name in wearers]
        return (
            DIRECTION if recolourable else gr.update(),
            example if recolourable else gr.update(),
            None,
            EXAMPLE,
            example,
            None,
            example,
            None,
        )

    def endpoint(source, example, upload, seed):
        if source == RANDOM:
            return studio.random_codes(seed)[0]
        return studio.face(photo(upload if source == UPLOAD else None, example)).z

    @user_errors
    def interpolate_prepare(
        source_a, example_a, upload_a, seed_a, source_b, example_b, upload_b, seed_b, method, steps, t
    ):
        a = endpoint(source_a, example_a, upload_a, seed_a)
        b = endpoint(source_b, example_b, upload_b, seed_b)
        return [a, b], studio.path(a, b, t, method), studio.strip(a, b, steps, method)

    def make_gif(codes, method="slerp"):
        """Runs after the strip is shown, so the page never waits for the GIF."""
        return studio.gif(codes[0], codes[1], method) if codes else None

    def interpolate_frame(codes, t, method):
        return studio.path(codes[0], codes[1], t, method) if codes else None

    @user_errors
    def combine(group_a, group_b, group_c, files_a, files_b, files_c):
        result, means = studio.arithmetic(
            [*(group_a or []), *(files_a or [])],
            [*(group_b or []), *(files_b or [])],
            [*(group_c or []), *(files_c or [])],
        )
        return result, [(image, f"mean of {name}") for image, name in zip(means, "ABC", strict=True)]

    @user_errors
    def edit_prepare(example, upload):
        return studio.face(photo(upload, example)).z

    @user_errors
    def own_strength(z):
        if z is None:
            raise ImageError("pick a face first")
        return studio.own_strength(z), True

    def edit_frame(z, *strengths_then_keep_sex):
        if z is None:
            return None
        *strengths, keep_sex = strengths_then_keep_sex
        return studio.attribute_edit(z, dict(zip(studio.directions, strengths, strict=True)), keep_sex)

    # Layout -------------------------------------------------------------------------------------
    with gr.Blocks(title="Face VAE Studio") as demo:
        gr.Markdown(
            "# Face VAE Studio\nA variational autoencoder that learned faces from 10,000 news photos "
            "(LFW). Every picture below is drawn by its decoder."
        )
        if choice.warning:
            gr.Markdown(f"⚠️ **{choice.warning}**", elem_id="model-warning")

        with gr.Tab("Showcase: frame colour", id="showcase"):
            gr.Markdown("Drag the slider: the same face, from **dark** to **light** eyeglass frames.")
            with gr.Row():
                # The direction first: along it the classifier's frame-lightness score follows t
                # (Spearman 0.99 on test faces), between two photos much less (0.56; README, goals).
                mode = gr.Radio([DIRECTION, TWO_PHOTOS], value=DIRECTION, label="How")
                face = gr.Dropdown(wearers, value=darks[0], label="Face to recolour")
                dark = gr.Dropdown(
                    [x for x in wearers if x[1] in darks], value=darks[0], label="Dark-framed face", visible=False
                )
                light = gr.Dropdown(
                    [x for x in wearers if x[1] in lights], value=lights[0], label="Light-framed face", visible=False
                )
            with gr.Row():
                with gr.Column(scale=2):
                    t_frame = gr.Slider(
                        0, 1, value=0, step=0.01, label="Frame colour: dark → light", elem_id="showcase-slider"
                    )
                    frame_out = face_view("Face", "showcase-image", height=384)
                with gr.Column(scale=1):
                    showcase_upload = PhotoInput(label="…or your own photo with glasses", type="filepath", height=200)
                    showcase_gif = gr.DownloadButton("Download GIF", variant="primary")
            showcase_strip = gr.Gallery(label="Dark to light", columns=8, height=180, object_fit="contain")
            showcase_codes = gr.State()

        with gr.Tab("Sample", id="sample"):
            with gr.Row():
                seed = gr.Number(0, precision=0, label="Seed", minimum=0)
                temperature = gr.Slider(0.1, 1.5, value=0.8, step=0.05, label="Temperature (spread)")
                count = gr.Slider(1, MAX_SAMPLES, value=16, step=1, label="How many")
                sampler = gr.Radio(
                    [
                        ("Learned prior (fitted to training faces)", "fitted"),
                        ("N(0, I), the training's prior", "prior"),
                    ],
                    value="fitted",
                    label="Sampler",
                    info="Learned prior: a Gaussian fitted to the codes of training faces after training, the prior "
                    "our likelihood figures use. N(0, I): the prior the training pulls codes towards; the codes "
                    "fill only part of it, so its draws are rarely faces.",
                )
            with gr.Row():
                sample_button = gr.Button("Sample", variant="primary", elem_id="sample-button")
                random_seed = gr.Button("Random seed", elem_id="random-seed")
            gallery = gr.Gallery(
                label="Random faces",
                elem_id="sample-gallery",
                columns=8,
                height=420,
                format="png",
                buttons=["download", "fullscreen"],
            )

        with gr.Tab("Reconstruct", id="reconstruct"):
            with gr.Row():
                with gr.Column():
                    recon_upload = PhotoInput(
                        label="Upload, webcam or paste",
                        type="filepath",
                        sources=["upload", "webcam", "clipboard"],
                        elem_id="recon-upload",
                    )
                    recon_example = gr.Dropdown(examples, value=examples[0][1], label="…or an example")
                    recon_button = gr.Button("Reconstruct", variant="primary")
                crop_out = face_view("Face as the model sees it")
                recon_out = face_view("Reconstruction", "recon-image")
            recon_note = gr.Markdown(elem_id="recon-note")
            send_button = gr.Button("Use this face in the other tabs")

        with gr.Tab("Interpolate", id="interpolate"):
            endpoints = []
            with gr.Row():
                for name, default in (("A", examples[0][1]), ("B", examples[-1][1])):
                    with gr.Column():
                        source = gr.Radio([EXAMPLE, UPLOAD, RANDOM], value=EXAMPLE, label=f"Face {name} from")
                        example = gr.Dropdown(examples, value=default, label=f"Example {name}")
                        upload = PhotoInput(label=f"Photo {name}", type="filepath", height=160)
                        seed_in = gr.Number(random.Random(name).randrange(10_000), precision=0, label=f"Seed {name}")
                        endpoints += [source, example, upload, seed_in]
            with gr.Row():
                method = gr.Radio(["slerp", "lerp"], value="slerp", label="Path")
                steps = gr.Slider(2, 32, value=8, step=1, label="Frames in the strip")
                t_path = gr.Slider(0, 1, value=0.5, step=0.01, label="t: A → B", elem_id="path-slider")
            with gr.Row():
                path_out = face_view("Face at t", "path-image")
                path_gif = gr.DownloadButton("Download GIF")
            path_strip = gr.Gallery(label="A to B", columns=8, height=180, object_fit="contain")
            path_codes = gr.State()

        with gr.Tab("Attribute arithmetic", id="arithmetic"):
            gr.Markdown("### A − B + C\nWhat group A has and group B lacks, added to group C (group means).")
            men_glasses = [e.name for e in studio.examples if e.male and e.glasses and e.frame != "sunglasses"][:3]
            women_glasses = [e.name for e in studio.examples if not e.male and e.glasses][:3]
            women = [e.name for e in studio.examples if not e.male and not e.glasses][:3]
            with gr.Row():
                group_a = gr.CheckboxGroup(examples, value=men_glasses, label="A: men with glasses", elem_id="group-a")
                group_b = gr.CheckboxGroup(examples, value=women_glasses, label="B: women with glasses")
                group_c = gr.CheckboxGroup(no_glasses + wearers, value=women, label="C: women without glasses")
            with gr.Accordion("Add your own photos to a group", open=False), gr.Row():
                files = [gr.File(file_count="multiple", file_types=["image"], label=f"Group {g}") for g in "ABC"]
            combine_button = gr.Button("A − B + C", variant="primary", elem_id="combine-button")
            with gr.Row():
                combined = face_view("Result", "combined-image")
                means = gr.Gallery(label="Group means", columns=3, height=200)
            gr.Markdown(
                "### Attribute sliders\nMove one face along learned directions: 0 leaves it as it is, 1 adds"
                + (
                    " as much as sets apart the faces with and without the attribute, as the model draws them."
                    if studio.edits_in_decoded_units
                    else " the gap between the mean codes of the faces with and without the attribute (this"
                    " model's statistics predate the decoded unit: `python -m vae_demo.latent_stats` redoes them)."
                )
            )
            with gr.Row():
                with gr.Column():
                    edit_example = gr.Dropdown(examples, value=no_glasses[0][1], label="Face")
                    edit_upload = PhotoInput(label="…or your own photo", type="filepath", height=160)
                    sliders = [
                        gr.Slider(*EDIT_RANGE, value=0, step=0.05, label=DIRECTION_LABELS[name], elem_id=f"edit-{name}")
                        for name in studio.directions
                    ]
                    keep_sex = gr.Checkbox(
                        value=studio.can_hold,
                        interactive=studio.can_hold,
                        label="Keep the sex call",
                        info=(
                            "Six classifiers steer the edit along Male until, averaged, they read the same sex "
                            "as before: drawn glasses alone turn about 1 face in 10 in a classifier's eyes."
                            if studio.can_hold
                            else "Needs the guide classifier (assets/guide) and a Male direction."
                        ),
                        elem_id="keep-sex",
                    )
                    own_button = gr.Button(
                        "Just enough glasses",
                        interactive=studio.can_hold and "Eyeglasses" in studio.directions,
                        elem_id="own-strength",
                    )
                    gr.Markdown(
                        "Sets the glasses slider to the least strength at which the guide sees glasses in this"
                        " face, with its sex call kept: faces that take glasses readily get less change."
                    )
                edited = face_view("Edited face", "edited-image", height=384)
            edit_code = gr.State()

        with gr.Tab("About", id="about"):
            gr.Markdown(about_text(choice), elem_id="about")

        # Wiring -------------------------------------------------------------------------------
        showcase_inputs = [mode, dark, light, face, showcase_upload, t_frame]
        showcase_outputs = [showcase_codes, frame_out, showcase_strip]
        for component in (dark, light, face, showcase_upload):
            component.change(showcase_prepare, showcase_inputs, showcase_outputs, api_name=False).then(
                make_gif, showcase_codes, showcase_gif, api_name=False
            )
        mode.change(
            lambda m: (gr.update(visible=m == TWO_PHOTOS),) * 2 + (gr.update(visible=m == DIRECTION),),
            mode,
            [dark, light, face],
            api_name=False,
        ).then(showcase_prepare, showcase_inputs, showcase_outputs, api_name=False).then(
            make_gif, showcase_codes, showcase_gif, api_name=False
        )
        demo.load(showcase_prepare, showcase_inputs, showcase_outputs, api_name="showcase_prepare").then(
            make_gif, showcase_codes, showcase_gif, api_name="showcase_gif"
        )
        t_frame.input(showcase_frame, [showcase_codes, t_frame], frame_out, api_name="showcase_frame", **LIVE)
        t_frame.release(showcase_frame, [showcase_codes, t_frame], frame_out, api_name=False, **LIVE)

        sample_inputs = [seed, temperature, count, sampler]
        sample_button.click(sample, sample_inputs, gallery, api_name="sample")
        random_seed.click(lambda: random.randrange(1_000_000), None, seed, api_name=False).then(
            sample, sample_inputs, gallery, api_name=False
        )
        demo.load(sample, sample_inputs, gallery, api_name=False)

        recon_outputs = [crop_out, recon_out, recon_note]
        recon_button.click(reconstruct, [recon_upload, recon_example], recon_outputs, api_name="reconstruct")
        recon_upload.upload(reconstruct, [recon_upload, recon_example], recon_outputs, api_name=False)
        recon_example.input(
            lambda example: (None, *reconstruct(None, example)),
            recon_example,
            [recon_upload, *recon_outputs],
            api_name=False,
        )
        send_button.click(
            send_face,
            [recon_upload, recon_example],
            [mode, face, showcase_upload, *endpoints[:3], edit_example, edit_upload],
            api_name=False,
        )

        path_inputs = [*endpoints, method, steps, t_path]
        path_outputs = [path_codes, path_out, path_strip]
        for component in (*endpoints, method, steps):
            component.change(interpolate_prepare, path_inputs, path_outputs, api_name=False).then(
                make_gif, [path_codes, method], path_gif, api_name=False
            )
        demo.load(interpolate_prepare, path_inputs, path_outputs, api_name="interpolate_prepare").then(
            make_gif, [path_codes, method], path_gif, api_name="interpolate_gif"
        )
        t_path.input(interpolate_frame, [path_codes, t_path, method], path_out, api_name="interpolate_frame", **LIVE)
        t_path.release(interpolate_frame, [path_codes, t_path, method], path_out, api_name=False, **LIVE)

        combine_inputs = [group_a, group_b, group_c, *files]
        combine_button.click(combine, combine_inputs, [combined, means], api_name="arithmetic")
        demo.load(combine, combine_inputs, [combined, means], api_name=False)

        for component in (edit_example, edit_upload):
            component.change(edit_prepare, [edit_example, edit_upload], edit_code, api_name=False).then(
                edit_frame, [edit_code, *sliders, keep_sex], edited, api_name=False
            )
        demo.load(edit_prepare, [edit_example, edit_upload], edit_code, api_name="edit_prepare").then(
            edit_frame, [edit_code, *sliders, keep_sex], edited, api_name=False
        )
        edit_inputs = [edit_code, *sliders, keep_sex]
        keep_sex.input(edit_frame, edit_inputs, edited, api_name=False)
        for i, slider in enumerate(sliders):
            slider.input(edit_frame, edit_inputs, edited, api_name="edit" if i == 0 else False, **LIVE)
        if "Eyeglasses" in studio.directions:
            glasses_slider = sliders[studio.directions.index("Eyeglasses")]
            own_button.click(own_strength, edit_code, [glasses_slider, keep_sex], api_name="own_strength").then(
                edit_frame, edit_inputs, edited, api_name=False
            )
    return demo


def about_text(choice: ModelChoice) -> str:
    lines = ["## The model", f"**Weights:** {choice.source}."]
    if choice.warning:
        lines.append(f"\n⚠️ {choice.warning}")
    metrics_file = choice.folder / "metrics.json" if choice.folder else None
    if metrics_file and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        splits = list(metrics)
        lines += ["", "**Measured** (from the model card; reconstructions from the posterior mean):", ""]
        lines += ["| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        for key, label, fmt in (
            ("psnr", "PSNR (dB)", "{:.2f}"),
            ("ssim", "SSIM", "{:.3f}"),
            ("neg_elbo_bits_per_dim", "negative ELBO (bits/dim)", "{:.3f}"),
            ("neg_elbo_fitted_prior_bits_per_dim", "negative ELBO with the learned prior (bits/dim)", "{:.3f}"),
            ("active_units", "active latent units", "{}"),
            ("n_images", "images", "{}"),
        ):
            values = [metrics[s].get(key) for s in splits]
            if any(v is not None for v in values):  # older cards lack the learned prior's row
                lines.append(f"| {label} | " + " | ".join("–" if v is None else fmt.format(v) for v in values) + " |")
    lines += [
        "",
        "## Training data",
        "Labeled Faces in the Wild (LFW, deep-funneled): 13,233 news photos of 5,749 public figures, "
        "split by identity into train / val / test. Attribute directions come from a face-attribute "
        "model's predictions; frame colour from hand labels. Photos are cropped to the training "
        "framing (eyes found by OpenCV) before encoding.",
        "",
        f"Config: `{json.dumps(choice.model.config)}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("VAE_DEMO_MODEL"), help="local folder or Hub repo id")
    parser.add_argument("--revision", default=os.environ.get("VAE_DEMO_REVISION"), help="Hub branch, tag or commit")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument(
        "--queue-size", type=int, default=int(os.environ.get("VAE_DEMO_QUEUE_SIZE", 32)),
        help="requests that may wait; beyond it a request is told the app is busy (HTTP 503) at once",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, default=int(os.environ.get("VAE_DEMO_CONCURRENCY", 2)),
        help="requests of one kind computed at the same time (2 suits a 2-core machine)",
    )  # fmt: skip
    args = parser.parse_args()
    limit_heap_arenas()  # before any thread starts
    choice = load_with_fallback(args.model, args.revision)
    if choice.warning:
        print(f"warning: {choice.warning}", flush=True)
    print(f"model: {choice.source}", flush=True)
    demo = build_app(choice)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD, show_error=True, css=CSS)


if __name__ == "__main__":
    main()
