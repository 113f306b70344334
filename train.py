"""Train a face VAE on an image collection and write a model folder the app can load.

Single process (CUDA if present, else CPU):
    python train.py --data ../shared/data/lfw --out runs/default
Several GPUs:
    torchrun --nproc_per_node 4 train.py --data /data/celeba --out runs/celeba
Continue a stopped run exactly where its last checkpoint left it (flags left off keep the
run's values; flags given, such as more --epochs, are reported as changes):
    python train.py --out runs/default --resume
Fine-tune a trained model (a folder or Hub repo id) on other photos, or train it longer; its
config sets the model's shape, and the KL weight starts at full strength:
    python train.py --init-from assets/model --data my_photos --out runs/mine --lr 5e-4
Publish to the Hub at the end (token from HF_TOKEN):
    python train.py ... --push-to-hub me/face-vae

A run folder holds checkpoint.pt (written atomically every --checkpoint-every steps and at
each epoch's end), metrics.jsonl (one line per epoch), grids/ (samples and reconstructions
per epoch) and, at the end, model/ (save_pretrained: config.json, model.safetensors,
latent_stats.safetensors, README.md model card, metrics.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vae_demo.baselines import SeedConvVAE, SeedMLPVAE
from vae_demo.card import write_model_card
from vae_demo.classifier import load_local
from vae_demo.data import DataError, EpochSampler, FaceData, balanced_weights, load_split
from vae_demo.discriminator import PatchDiscriminator, discriminator_loss, generator_loss
from vae_demo.evaluate import evaluate, fit_latent_stats, model_pass, ssim, summarize
from vae_demo.hub import PublishError, load_model, publish
from vae_demo.images import uint8_to_float
from vae_demo.latent_stats import confounder_strata
from vae_demo.model import ConvVAE, HubVAE, WeightsError
from vae_demo.objective import ElboTerms, kl_warmup, negative_elbo


@dataclass
class TrainConfig:
    # data
    data: str = "../shared/data/lfw"  # LFW, CelebA or class-per-folder image collection
    out: str = "runs/default"  # run folder: checkpoint, metrics, grids, model/
    image_size: int = 128  # side of the square face crops
    max_train_images: int = 0  # use only the first N training images (0: all); for smoke tests
    flip: bool = True  # random horizontal flips (faces are nearly symmetric)
    balance: tuple[str, ...] = ()  # draw attribute combinations (Eyeglasses Male) by their counts' square roots
    # model
    arch: str = "conv"  # "conv" (ours), "seed" or "seed_mlp" (the seed tutorials' conv and MLP VAEs)
    channels: tuple[int, ...] = (16, 32, 64, 128)  # encoder widths, one per halving (128 px -> 8 px)
    latent_dim: int = 1024  # size of z: with --spatial-latent, grid cells x numbers per cell (8 x 8 x 16)
    spatial_latent: bool = True  # z as codes on the last feature map's grid, not one global vector
    res_blocks: int = 2  # residual blocks per low-resolution stage
    likelihood: str = "gaussian_optimal"  # decoder p(x|z): see vae_demo/objective.py
    eye_weight: float = 4.0  # how much more the band across the eyes counts in the likelihood (1: plain)
    # objective
    beta: float = 1.0  # KL weight after warm-up (1.0 is the true ELBO)
    kl_warmup_steps: int = 1000  # steps over which beta ramps up from 0 (with --init-from: 0 unless given)
    ssim_weight: float = 0.0  # an extra (1 - SSIM) term, nats per pixel value, not part of the ELBO (0: none)
    adv_weight: float = 0.0  # a patch discriminator's term on reconstructions, nats per pixel value, not ELBO (0: none)
    # optimisation
    epochs: int = 30  # passes over the training split
    time_budget_min: float = 0.0  # stop after this many minutes of training (0: none), summed over resumes
    batch_size: int = 64  # per process
    lr: float = 1e-3  # AdamW peak learning rate, cosine-decayed to lr/10
    lr_warmup_steps: int = 300  # linear warm-up; without it Adam's first steps blow up log-variances
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 100.0  # max gradient norm (the loss is in nats per image, so gradients are large)
    seed: int = 0  # seeds weights, data order, flips and reparameterisation noise
    # "last" is for terms outside the ELBO, which trade some of it away on purpose: the best
    # -ELBO is then the start of training, not its aim
    keep: str = "best"  # the weights saved: "best" (lowest validation -ELBO) or "last"
    # latent statistics
    classifier: str = "assets/classifier"  # picks the glasses wearers whose reconstructions show them ("": none)
    # machinery
    device: str = "auto"  # "auto" (CUDA if present), "cuda" or "cpu"
    threads: int = 0  # CPU threads (0: torch's default)
    compile: bool = False  # torch.compile the model (CUDA; first steps are slow)
    checkpoint_every: int = 200  # steps between checkpoints
    resume: bool = False  # continue from out/checkpoint.pt; flags left off keep the run's values
    init_from: str = ""  # start from a trained model (folder or Hub repo id); shape flags left off take its config
    push_to_hub: str = ""  # Hub repo id to publish the model to at the end
    save_fp16: bool = False  # store the final weights in float16 (half the size)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command-line flags from the TrainConfig fields; each help text shows the default.

    With --resume, a flag left off takes the value the checkpoint's run had, not the default:
    `python train.py --out DIR --resume` goes on with the settings the run began with. With
    --init-from, the flags that shape the model take the starting model's values, and the
    KL warm-up is skipped: a trained model's codes are already in use, and a KL weight of 0
    would let them drift away from the prior.
    """
    args = vars(_parser().parse_args(argv))
    given = vars(_parser(with_defaults=False).parse_args(argv))
    run = _checkpoint_config(Path(args["out"]) / "checkpoint.pt") if args["resume"] else {}
    args |= {k: v for k, v in run.items() if k in args and k not in given}  # settings removed since: dropped
    if args["init_from"] and not run:  # a checkpoint holds the weights already, and their shape
        start = _shape_flags(_read_model_config(args["init_from"])) | {"kl_warmup_steps": 0}
        args |= {k: v for k, v in start.items() if k not in given}
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})


def _parser(with_defaults: bool = True) -> argparse.ArgumentParser:
    """Without defaults, the parsed namespace holds only the flags the command line gave."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    comments = _field_comments()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{comments.get(f.name, '')} (default: {f.default})"
        default = f.default if with_defaults else argparse.SUPPRESS
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif f.type.startswith("tuple"):
            item = str if f.type.startswith("tuple[str") else int
            parser.add_argument(flag, type=item, nargs="+", default=default, help=help_text)
        else:
            parser.add_argument(flag, type=type(f.default), default=default, help=help_text)
    return parser


# The model config's arguments that TrainConfig sets under the same name, and its architectures' --arch.
SHAPE_FLAGS = ("image_size", "channels", "latent_dim", "spatial_latent", "res_blocks", "likelihood", "eye_weight")
ARCH_FLAGS = {"ConvVAE": "conv", "SeedConvVAE": "seed", "SeedMLPVAE": "seed_mlp"}


def _read_model_config(source: str) -> dict:
    """The config of a model folder or Hub repo, as loading it finds it (a clear exit where it cannot)."""
    try:
        return load_model(source).config
    except (WeightsError, OSError, ValueError) as error:
        raise SystemExit(f"error: --init-from {source}: {error}") from None


def _shape_flags(config: dict) -> dict:
    """The training flags that rebuild the model a saved config describes."""
    flags = {k: config[k] for k in SHAPE_FLAGS if k in config}
    return flags | {"arch": ARCH_FLAGS.get(config.get("architecture", "ConvVAE"), "conv")}


def _checkpoint_config(path: Path) -> dict:
    """The TrainConfig a checkpoint's run was started with ({} where there is no checkpoint yet)."""
    return load_checkpoint(path)["config"] if path.is_file() else {}


def _field_comments() -> dict[str, str]:
    import inspect

    comments = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        name, _, rest = line.strip().partition(":")
        if "#" in rest and name.isidentifier():
            comments[name] = rest.split("#", 1)[1].strip()
    return comments


# Processes and devices ----------------------------------------------------------------------


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        """Where the training runs, for the model card: "one NVIDIA H100 80GB HBM3", "the CPU (1 thread)"."""
        if self.cuda:
            name = torch.cuda.get_device_name(self.device)
            return f"{self.world_size} × {name}" if self.world_size > 1 else f"one {name}"
        threads = torch.get_num_threads()
        each = f"{threads} thread{'s' * (threads != 1)}"
        return f"{self.world_size} CPU processes ({each} each)" if self.world_size > 1 else f"the CPU ({each})"


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """One process, or one of several started by torchrun (which sets RANK and WORLD_SIZE)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if "RANK" not in os.environ:
        return Runtime(torch.device("cuda" if use_cuda else "cpu"))
    rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return Runtime(torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"), rank, world_size)


def build_model(cfg: TrainConfig) -> HubVAE:
    if cfg.arch == "seed":
        return SeedConvVAE(image_size=cfg.image_size)
    if cfg.arch == "seed_mlp":
        return SeedMLPVAE(image_size=cfg.image_size)
    if cfg.arch != "conv":
        raise SystemExit(f"error: --arch must be 'conv', 'seed' or 'seed_mlp', got {cfg.arch!r}")
    try:
        return ConvVAE(
            image_size=cfg.image_size,
            channels=cfg.channels,
            latent_dim=cfg.latent_dim,
            res_blocks=cfg.res_blocks,
            likelihood=cfg.likelihood,
            eye_weight=cfg.eye_weight,
            spatial_latent=cfg.spatial_latent,
        )
    except ValueError as error:  # sizes that do not fit together
        raise SystemExit(f"error: {error}") from error


# Checkpoints ------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file and rename: a kill mid-write leaves the previous checkpoint intact."""
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _rng_state(rt: Runtime) -> dict:
    """Everything random in a step: flips (CPU generator) and reparameterisation noise (its device's)."""
    state = {"cpu": torch.get_rng_state()}
    if rt.cuda:
        state["cuda"] = torch.cuda.get_rng_state(rt.device)
    return state


def _set_rng_state(state: dict | torch.Tensor, rt: Runtime) -> None:
    if isinstance(state, torch.Tensor):  # checkpoints before CUDA states were kept held the CPU state alone
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if rt.cuda and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], rt.device)


def _with_defaults(config: dict, model: HubVAE) -> dict:
    """A saved model config completed with today's defaults (for arguments added since it was saved)."""
    arguments = {k: v for k, v in config.items() if k != "architecture"}
    return type(model)(**arguments).config if config.get("architecture") == model.config["architecture"] else config


# Model arguments that change the likelihood, not the weights: a run may resume with new values.
LIKELIHOOD_ARGUMENTS = ("likelihood", "log_sigma", "eye_weight")


def _differs_in_weights(saved: dict, now: dict) -> bool:
    keep = lambda config: {k: v for k, v in config.items() if k not in LIKELIHOOD_ARGUMENTS}  # noqa: E731
    return keep(saved) != keep(now)


def _differs(before, now) -> bool:
    return (list(before) if isinstance(before, tuple | list) else before) != (
        list(now) if isinstance(now, tuple | list) else now
    )


def _load_initial_weights(model: HubVAE, source: str) -> None:
    """Copy a trained model's weights into `model`, which must have the same shape."""
    try:
        model.load_state_dict(load_model(source).float().state_dict())
    except (WeightsError, OSError, RuntimeError) as error:
        raise SystemExit(f"error: --init-from {source}: its weights do not fit this model ({error})") from None


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise SystemExit(f"error: checkpoint {path} cannot be read ({error}); delete it to start afresh") from None


# Training ---------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Critic:
    """The patch discriminator of the adversarial term (--adv-weight), and what trains it."""

    model: torch.nn.Module  # what runs its own step: the discriminator or its DDP wrapper
    raw: PatchDiscriminator  # the discriminator itself, which judges the decoder's reconstructions
    optimizer: torch.optim.Optimizer
    weight: float  # nats per pixel value
    loss: torch.Tensor | None = None  # its hinge loss at the last step, for the log


def train(cfg: TrainConfig) -> Path | None:
    """Run (or resume) training; returns the model folder on the main process."""
    if cfg.keep not in ("best", "last"):
        raise SystemExit(f"error: --keep must be 'best' or 'last', got {cfg.keep!r}")
    rt = setup_runtime(cfg)
    out = Path(cfg.out)
    checkpoint_path = out / "checkpoint.pt"
    if rt.is_main:
        (out / "grids").mkdir(parents=True, exist_ok=True)

    train_data = load_split(cfg.data, "train", cfg.image_size)
    if cfg.max_train_images:
        train_data = _head(train_data, cfg.max_train_images)
    val_data = load_split(cfg.data, "val", cfg.image_size) if rt.is_main else None
    if len(train_data) < cfg.batch_size * rt.world_size:
        raise DataError(f"the train split has {len(train_data)} images, fewer than one batch per process")
    weights = _balanced_weights(train_data, cfg.balance) if cfg.balance else None

    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    # channels_last: faster convolutions on CUDA (tensor cores) and measurably on the CPU too
    model = build_model(cfg).to(rt.device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    discriminator = d_optimizer = None
    if cfg.adv_weight:
        discriminator = PatchDiscriminator().to(rt.device, memory_format=torch.channels_last)
        # Adam with a short memory of momentum, as GANs are usually trained (Radford et al. 2016)
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    steps_per_epoch = len(train_data) // (cfg.batch_size * rt.world_size)
    total_steps = cfg.epochs * steps_per_epoch
    budget_s = cfg.time_budget_min * 60 or math.inf

    state = {"step": 0, "epoch": 0, "train_seconds": 0.0, "best": None, "sums": {}}
    if cfg.resume and checkpoint_path.is_file():
        checkpoint = load_checkpoint(checkpoint_path)
        saved_config = _with_defaults(checkpoint["model_config"], model)
        if _differs_in_weights(saved_config, model.config):
            raise SystemExit(
                f"error: {checkpoint_path} holds a model with config {checkpoint['model_config']}, "
                f"but the flags describe {model.config}; pass the same flags to resume"
            )
        if len(checkpoint["rng"]) != rt.world_size:
            raise SystemExit(
                f"error: {checkpoint_path} was written by {len(checkpoint['rng'])} process(es); "
                f"resume it with the same number (this run has {rt.world_size})"
            )
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if discriminator is not None and "discriminator" in checkpoint:  # else: a term added on resume
            discriminator.load_state_dict(checkpoint["discriminator"])
            d_optimizer.load_state_dict(checkpoint["discriminator_optimizer"])
        state = checkpoint["state"]
        _set_rng_state(checkpoint["rng"][rt.rank], rt)
        if rt.is_main:
            print(f"resuming from {checkpoint_path}: epoch {state['epoch']}, step {state['step']}")
            before = asdict(TrainConfig()) | checkpoint["config"]  # settings added since: their defaults
            before = {k: v for k, v in before.items() if hasattr(cfg, k)}  # and settings removed since
            changed = {k: (v, getattr(cfg, k)) for k, v in before.items() if _differs(v, getattr(cfg, k))}
            changed = {k: v for k, v in changed.items() if k not in ("resume", "push_to_hub")}
            changes = []
            for name, (before, now) in changed.items():
                flag = "--" + name.replace("_", "-")
                print(f"note: {flag} was {before} in the checkpoint's run, now {now}")
                changes.append(f"{flag} {before} → {now}")
            if changes:
                state.setdefault("changes", []).append(f"at step {state['step']} with {', '.join(changes)}")
    else:
        if cfg.init_from:
            _load_initial_weights(model, cfg.init_from)
            if rt.is_main:
                print(f"starting from the weights of {cfg.init_from}")
        torch.manual_seed(cfg.seed * 1000 + rt.rank + 1)  # different noise per process
    hardware, here = state.setdefault("hardware", []), rt.describe()  # for the model card
    if here not in hardware:  # a resumed run may have moved
        hardware.append(here)
    model_config = model.config
    if rt.world_size > 1:
        model = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.cuda else None)
    train_model = torch.compile(model) if cfg.compile else model
    raw_model: HubVAE = model.module if rt.world_size > 1 else model
    critic = None
    if discriminator is not None:
        runs = discriminator
        if rt.world_size > 1:
            runs = DistributedDataParallel(discriminator, device_ids=[rt.device.index] if rt.cuda else None)
        critic = Critic(runs, discriminator, d_optimizer, cfg.adv_weight)

    def checkpoint_now() -> None:
        rng = [_rng_state(rt)]
        if rt.world_size > 1:
            rng = [None] * rt.world_size
            dist.all_gather_object(rng, _rng_state(rt))
        if rt.is_main:
            contents = {
                "config": asdict(cfg),
                "model_config": model_config,
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": state,
                "rng": rng,
            }
            if critic is not None:
                contents["discriminator"] = critic.raw.state_dict()
                contents["discriminator_optimizer"] = critic.optimizer.state_dict()
            save_checkpoint(checkpoint_path, contents)

    fixed_val = val_data.images[:16] if val_data is not None else None
    fixed_z = torch.randn(64, raw_model.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))

    while state["epoch"] < cfg.epochs and state["train_seconds"] < budget_s:
        epoch = state["epoch"]
        done_in_epoch = state["step"] - epoch * steps_per_epoch
        sampler = EpochSampler(
            len(train_data), cfg.seed, epoch, rt.rank, rt.world_size, done_in_epoch * cfg.batch_size, weights
        )
        batches = _batches(train_data.images, sampler, cfg, rt)
        bar = tqdm(
            batches,
            total=steps_per_epoch - done_in_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not rt.is_main,
            dynamic_ncols=True,
        )
        model.train()
        tic = time.perf_counter()
        for x in bar:
            x = uint8_to_float(x.to(rt.device, non_blocking=True))
            if cfg.flip:  # the mask is drawn on the CPU, so CPU and CUDA runs see the same flips
                flip = (torch.rand(len(x)) < 0.5).to(x.device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = x.contiguous(memory_format=torch.channels_last)
            progress = max(state["step"] / total_steps, state["train_seconds"] / budget_s)
            lr = _learning_rate(cfg.lr, state["step"], cfg.lr_warmup_steps, progress)
            for group in optimizer.param_groups + (critic.optimizer.param_groups if critic else []):
                group["lr"] = lr
            beta = kl_warmup(state["step"], cfg.kl_warmup_steps, cfg.beta)
            try:
                terms = train_step(train_model, raw_model, optimizer, x, beta, cfg.grad_clip, cfg.ssim_weight, critic)
            except NonFiniteLossError as error:
                raise NonFiniteLossError(
                    f"{error} at epoch {epoch + 1}, step {state['step']}; stopped. "
                    f"The last good checkpoint is {checkpoint_path}: lower --lr or --grad-clip and resume."
                ) from None

            state["step"] += 1
            with torch.no_grad():
                for name, value in (
                    ("loss", terms.loss),
                    ("neg_elbo", terms.negative_elbo),
                    ("kl", terms.kl),
                    ("log_sigma", terms.log_sigma),
                    *([("discriminator_loss", critic.loss)] if critic else []),
                ):
                    state["sums"][name] = state["sums"].get(name, 0.0) + value.item()
                state["sums"]["n"] = state["sums"].get("n", 0) + 1
            bar.set_postfix(neg_elbo=f"{terms.negative_elbo.item():.0f}", kl=f"{terms.kl.item():.0f}", lr=f"{lr:.1e}")
            now = time.perf_counter()
            state["train_seconds"] += now - tic
            tic = now
            if state["step"] % cfg.checkpoint_every == 0:
                checkpoint_now()
            if _out_of_time(state, budget_s, rt):
                state["train_seconds"] = max(state["train_seconds"], budget_s)  # agree on every rank
                break
        else:
            state["epoch"] += 1
        epoch_finished = state["step"] == state["epoch"] * steps_per_epoch and state["epoch"] > epoch
        if rt.is_main and (epoch_finished or state["train_seconds"] >= budget_s):
            record = _end_of_epoch(raw_model, state, steps_per_epoch, val_data, fixed_val, fixed_z, out, rt)
            print(json.dumps(record))
        checkpoint_now()

    if rt.world_size > 1:
        dist.barrier()
    model_dir = finish(raw_model, state, cfg, train_data, val_data, out) if rt.is_main else None
    if rt.world_size > 1:
        dist.destroy_process_group()
    return model_dir


def train_step(
    model: torch.nn.Module,
    raw_model: HubVAE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    beta: float,
    grad_clip: float,
    ssim_weight: float = 0.0,
    critic: Critic | None = None,
) -> ElboTerms:
    """One optimisation step on a batch x in [0, 1]: forward, negative ELBO, backward, clip, update.

    `model` is what runs the forward pass (the model itself, its DDP wrapper or its compiled
    form); `raw_model` is the model, whose likelihood settings the objective reads. On CUDA
    the forward pass runs in bfloat16 autocast and the objective in float32. A non-finite loss
    raises NonFiniteLossError before anything is updated. With `ssim_weight`, the loss also
    counts ssim_weight * (1 - SSIM) nats per pixel value; the returned terms stay the ELBO's.
    With a `critic`, the loss also counts its weight times the discriminator's generator loss
    (nats per pixel value), and then the discriminator takes its own step on x against the
    reconstructions.
    """
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
        recon, mu, logvar = model(x)
    terms = negative_elbo(
        x,
        recon,
        mu,
        logvar,
        raw_model.likelihood,
        log_sigma=getattr(raw_model, "log_sigma", None),
        beta=beta,
        precision=getattr(raw_model, "pixel_precision", None),
    )
    loss = terms.loss
    if ssim_weight:
        # Squared error forgives a thin frame drawn a pixel off or smeared; SSIM compares local
        # structure. In nats per pixel value, so its weight does not depend on the image size.
        loss = loss + ssim_weight * x[0].numel() * (1 - ssim(recon.float(), x)).mean()
    if critic is not None:
        # The discriminator itself, not its DDP wrapper: its gradients from this pass are local
        # and thrown away below; only the decoder's are shared.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            fake_logits = critic.raw(recon)
        loss = loss + critic.weight * x[0].numel() * generator_loss(fake_logits.float())
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"the loss became {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if raw_model.likelihood == "gaussian_optimal":
        raw_model.log_sigma.data.copy_(terms.log_sigma)  # remember the optimum, for sampling
    if critic is not None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):  # one pass, as DDP wants
            real_logits, fake_logits = critic.model(torch.cat([x, recon.detach()])).float().chunk(2)
        critic.loss = discriminator_loss(real_logits, fake_logits)
        critic.optimizer.zero_grad(set_to_none=True)
        critic.loss.backward()
        critic.optimizer.step()
        critic.loss = critic.loss.detach()
    return terms


def _out_of_time(state: dict, budget_s: float, rt: Runtime) -> bool:
    """Whether the time budget is spent; with several processes rank 0's clock decides for all."""
    if budget_s == math.inf:
        return False
    spent = torch.tensor([float(state["train_seconds"] >= budget_s)])
    if rt.world_size > 1:
        dist.broadcast(spent, src=0)  # gloo and nccl alike; on CUDA the tensor is tiny
    return bool(spent.item())


def _head(data: FaceData, n: int) -> FaceData:
    return FaceData(
        images=data.images[:n],
        attributes={k: v[:n] for k, v in data.attributes.items()},
        paths=data.paths[:n],
        frame_light=None if data.frame_light is None else data.frame_light[:n],
    )


def _balanced_weights(data: FaceData, names: tuple[str, ...]) -> torch.Tensor:
    missing = [name for name in names if name not in data.attributes]
    if missing:
        known = ", ".join(sorted(data.attributes)) or "none"
        raise DataError(f"--balance: the collection has no attribute {', '.join(missing)} (it has: {known})")
    return balanced_weights(confounder_strata(data.attributes, list(names)))


def _batches(images: torch.Tensor, sampler: EpochSampler, cfg: TrainConfig, rt: Runtime):
    """Batches of uint8 images sliced from the split in memory, in the sampler's order.

    On CUDA each batch is pinned so that its copy to the GPU runs asynchronously. Slicing a
    batch takes a millisecond or two; a DataLoader's workers only add process start-ups and
    copies (measured on an H100, 256 per batch: 7,450 images a second this way, 5,700 with
    four workers; README "Training speed").
    """
    order = torch.tensor(sampler.indices(), dtype=torch.long)
    for start in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
        batch = images[order[start : start + cfg.batch_size]]
        yield batch.pin_memory() if rt.cuda else batch


def _learning_rate(lr: float, step: int, warmup_steps: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to lr / 10 as progress (by steps or by time) goes 0 -> 1."""
    warmup = min(1.0, (step + 1) / max(1, warmup_steps))
    progress = min(1.0, progress)
    return warmup * lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def _end_of_epoch(
    model: HubVAE, state: dict, steps_per_epoch: int, val_data, fixed_val, fixed_z, out: Path, rt: Runtime
) -> dict:
    """Validate, keep the best weights by validation -ELBO, log a line and save grids."""
    from torchvision.utils import save_image

    sums = state["sums"]
    n = max(1, sums.get("n", 1))
    record = {
        "epoch": state["epoch"],
        "epochs_done": round(state["step"] / steps_per_epoch, 3),  # fractional when the time budget ran out
        "step": state["step"],
        "train_seconds": round(state["train_seconds"], 1),
    }
    record |= {f"train_{k}": v / n for k, v in sums.items() if k != "n"}
    val = summarize(model_pass(model, val_data.images))
    record |= {f"val_{k}": v for k, v in val.items()}
    state["sums"] = {}
    if state["best"] is None or val["neg_elbo_bits_per_dim"] < state["best"]["val_neg_elbo_bits_per_dim"]:
        state["best"] = {
            "epoch": state["epoch"],
            "val_neg_elbo_bits_per_dim": val["neg_elbo_bits_per_dim"],
            "val_psnr": val["psnr"],
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        }
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    x = uint8_to_float(fixed_val).to(rt.device)
    save_image(torch.cat([x, model.reconstruct(x).float()]), out / "grids" / f"recon_{state['epoch']:03d}.png", nrow=16)
    save_image(model.decode(fixed_z.to(rt.device)).float(), out / "grids" / f"prior_{state['epoch']:03d}.png", nrow=8)
    model.train()
    return record


def finish(model: HubVAE, state: dict, cfg: TrainConfig, train_data: FaceData, val_data: FaceData, out: Path) -> Path:
    """Kept weights -> latent statistics and directions -> model folder with card -> Hub."""
    if cfg.keep == "best" and state["best"] is not None:
        model.load_state_dict(state["best"]["model"])
    model.eval()
    classifier = load_local(cfg.classifier, "attribute directions from the labels alone", model.device)
    model.latent_stats = fit_latent_stats(model, train_data, classifier)

    metrics = {"val": evaluate(model, val_data.images)}
    try:
        metrics["test"] = evaluate(model, load_split(cfg.data, "test", cfg.image_size).images, val_data.images)
    except DataError as error:
        print(f"no test metrics: {error}")
    model_dir = out / "model"
    if cfg.save_fp16:
        model.half()
    model.save_pretrained(model_dir)
    model.float()
    write_model_card(model_dir, model, cfg=asdict(cfg), metrics=metrics, state=state, n_train=len(train_data))
    print(f"model saved to {model_dir}; metrics: {json.dumps(metrics)}")
    if cfg.push_to_hub:
        try:
            print(f"published: {publish(model_dir, cfg.push_to_hub)}")
        except PublishError as error:
            print(f"error: {error}", file=sys.stderr)
    return model_dir


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        train(cfg)
    except (DataError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
