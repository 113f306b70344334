"""The README's pictures: random samples and test-split reconstructions of a model.

    python benchmarks/make_figures.py --model assets/model --data ../shared/data/lfw --out assets/figures

Writes samples.png (fitted sampler, temperature 0.8, seed 0, and the same seeds from the
N(0, I) prior below them), reconstructions.png (test photos, glasses wearers first, each
above its reconstruction), frame_colour.png (the showcase strip, dark to light, as the app opens),
glasses_edit.png (test faces without glasses, women then men, with the glasses direction
added at strengths 0, 1 and 1.5), glasses_held.png (the same faces: reconstructions, the
glasses direction added at the held edit's strength, the held edit, which the guide
classifier steers to keep the sex call, and the held edit at each face's own strength, the
least at which the guide sees glasses) and wearers.png (12 random confident test wearers, seed 1,
each photo above its reconstruction: are the glasses kept?).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_demo.data import load_split  # noqa: E402
from vae_demo.evaluate import EDIT_ABSENT, GLASSES_CONFIDENT, posterior  # noqa: E402
from vae_demo.guide import GUIDE_DIR, HELD_GLASSES_STRENGTH, held_edit, load_guide, own_strengths  # noqa: E402
from vae_demo.hub import load_model  # noqa: E402
from vae_demo.images import uint8_to_float  # noqa: E402
from vae_demo.latents import edit, interpolate  # noqa: E402
from vae_demo.studio import Studio  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/model", help="model folder (default: assets/model)")
    parser.add_argument("--data", default="../shared/data/lfw", help="LFW-layout data (default: %(default)s)")
    parser.add_argument("--out", default="assets/figures", help="output folder (default: assets/figures)")
    parser.add_argument("--columns", type=int, default=8, help="images per row (default: 8)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    studio = Studio(model)
    n = args.columns

    with torch.inference_mode():
        fitted = model.decode(model.latent_stats.sample(2 * n, "fitted", 0.8, torch.Generator().manual_seed(0)))
        prior = model.decode(model.latent_stats.sample(n, "prior", 0.8, torch.Generator().manual_seed(0)))
        save_image(torch.cat([fitted, prior]), out / "samples.png", nrow=n, padding=2, pad_value=1.0)

        test = load_split(args.data, "test", model.image_size)
        wearers = torch.nonzero(test.attributes["Eyeglasses"] > GLASSES_CONFIDENT).flatten()
        without = test.attributes["Eyeglasses"] < EDIT_ABSENT
        pictured = torch.cat([wearers[: n // 2], torch.nonzero(without).flatten()])[:n]  # wearers first
        x = uint8_to_float(test.images[pictured])
        save_image(torch.cat([x, model.reconstruct(x)]), out / "reconstructions.png", nrow=n, pad_value=1.0)

        # As the app's showcase opens: its first dark-framed example moved along the frame-colour direction.
        dark = studio.example_names(frame="dark")[0]
        path = interpolate(*studio.frame_colour_endpoints(studio.face(dark).z), n)
        save_image(model.decode(path), out / "frame_colour.png", nrow=n, padding=2, pad_value=1.0)

        women = torch.nonzero(without & (test.attributes["Male"] < 0.1)).flatten()[: n // 2]
        men = torch.nonzero(without & (test.attributes["Male"] > 0.9)).flatten()[: n - len(women)]
        z, _ = posterior(model, test.images[torch.cat([women, men])])
        glasses = model.latent_stats.directions["Eyeglasses"]
        rows = [model.decode(edit(z, glasses, strength)) for strength in (0.0, 1.0, 1.5)]
        save_image(torch.cat(rows), out / "glasses_edit.png", nrow=n, padding=2, pad_value=1.0)
        guide = load_guide(GUIDE_DIR, "no glasses_held.png")
        if guide is not None:
            strengths = {"Eyeglasses": HELD_GLASSES_STRENGTH}
            rows = [rows[0], model.decode(edit(z, glasses, HELD_GLASSES_STRENGTH))]
            rows.append(model.decode(held_edit(model, guide, z, strengths)))
            own = {"Eyeglasses": own_strengths(model, guide, z)}
            rows.append(model.decode(held_edit(model, guide, z, own)))
            save_image(torch.cat(rows), out / "glasses_held.png", nrow=n, padding=2, pad_value=1.0)

        wearers = wearers[torch.randperm(len(wearers), generator=torch.Generator().manual_seed(1))[:12]]
        x = uint8_to_float(test.images[wearers])
        r = model.reconstruct(x)
        save_image(torch.cat([x[:6], r[:6], x[6:], r[6:]]), out / "wearers.png", nrow=6, pad_value=1.0)
    print(f"wrote {', '.join(p.name for p in sorted(out.glob('*.png')))} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
