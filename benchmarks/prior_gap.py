"""How much of the KL is the prior's fault? The KL to N(0, I) against the KL to the codes' own Gaussian.

    python benchmarks/prior_gap.py --model assets/model --data ../shared/data/lfw

A VAE's KL term, averaged over the data, is the KL from each posterior q(z|x) to the prior.
Of all Gaussian priors, the one that makes it smallest is the Gaussian fitted to the codes
themselves: mean E[mu], covariance Cov(mu) + E[diag sigma^2] (the moments of the aggregate
posterior). Fitted on the train split and scored on another, it says how far the codes sit
from N(0, I), in nats and in bits/dim of the negative ELBO, and so how much a learned
Gaussian prior gains: the full one is the model's learned prior (`LatentStats.kl`), whose
draws are the app's fitted sampler at temperature 1. A diagonal fit shows how much of the gap
is correlation between code entries.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_demo.data import load_split  # noqa: E402
from vae_demo.evaluate import posterior  # noqa: E402
from vae_demo.hub import load_model  # noqa: E402
from vae_demo.objective import kl_to_gaussian, kl_to_standard_normal  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/model", help="model folder (default: %(default)s)")
    parser.add_argument("--data", default="../shared/data/lfw", help="LFW-layout data (default: %(default)s)")
    parser.add_argument("--split", default="test", choices=("val", "test"), help="scored split (default: %(default)s)")
    args = parser.parse_args()

    model = load_model(args.model)
    train = load_split(args.data, "train", model.image_size)
    scored = load_split(args.data, args.split, model.image_size)
    mu, logvar = (t.double() for t in posterior(model, train.images))
    mean, variance = mu.mean(0), logvar.exp().mean(0)
    priors = {
        "N(0, I)": None,
        "the codes' diagonal Gaussian": (mean, torch.diag(mu.var(0) + variance)),
        "the codes' full Gaussian": (mean, torch.cov(mu.T) + torch.diag(variance)),
    }
    mu, logvar = (t.double() for t in posterior(model, scored.images))
    dims = scored.images[0].numel()
    print(f"KL of {args.model}'s {args.split} posteriors to each prior, fitted on the train codes\n")
    print("| prior | KL (nats) | −ELBO change (bits/dim) |\n|---|---|---|")
    standard = kl_to_standard_normal(mu, logvar).mean().item()
    for name, fit in priors.items():
        kl = (
            standard if fit is None else kl_to_gaussian(mu, logvar, fit[0], torch.linalg.cholesky(fit[1])).mean().item()
        )
        print(f"| {name} | {kl:.0f} | {(kl - standard) / (dims * math.log(2)):+.4f} |")  # nats -> bits per dim
    return 0


if __name__ == "__main__":
    sys.exit(main())
