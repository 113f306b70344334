"""The convolutional VAE: an encoder q(z|x), a decoder p(x|z) and the Hub plumbing.

Usage:
    >>> import torch
    >>> from vae_demo import ConvVAE
    >>> model = ConvVAE(image_size=64, channels=(16, 32, 64), latent_dim=32)
    >>> mu, logvar = model.encode(torch.rand(2, 3, 64, 64))
    >>> model.decode(mu).shape
    torch.Size([2, 3, 64, 64])

Saving and loading go through `PyTorchModelHubMixin`: `save_pretrained(dir)` writes
`config.json` (the constructor arguments) and `model.safetensors`;
`ConvVAE.from_pretrained(dir_or_repo_id, revision=...)` reads them back, strictly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import load_file
from torch import nn

from vae_demo.images import EYE_Y
from vae_demo.latent_stats import LATENT_STATS_FILE, LatentStats
from vae_demo.objective import FIXED_LOG_SIGMA, eye_precision

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# Which p(x|z) the decoder defines; see vae_demo.objective for the formulas.
LIKELIHOODS = ("gaussian_optimal", "gaussian_learned", "gaussian_fixed", "bernoulli")


class WeightsError(ValueError):
    """A weights folder or file that cannot be loaded; the message names the file."""


class ResBlock(nn.Module):
    """x + f(x) with two 3x3 convolutions: extra depth at a low resolution, where it is cheap."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def down(c_in: int, c_out: int) -> nn.Sequential:
    """Halve the resolution: (B, c_in, H, W) -> (B, c_out, H/2, W/2)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))


def up(c_in: int, c_out: int) -> nn.Sequential:
    """Double the resolution: (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)
    )


class HubVAE(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vae_demo",
    tags=["vae", "faces", "image-generation"],
    license="mit",
):
    """What every VAE here shares: the encode/decode API and saving to and loading from the Hub.

    Subclasses define `encode(x) -> (mu, logvar)` and `decode(z) -> images in [0, 1]`.
    `config.json` records the subclass's name as "architecture", so `vae_demo.hub.load_model`
    can rebuild the right class.
    """

    latent_stats: LatentStats | None = None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample z by reparameterisation, decode.

        Returns:
            reconstruction (B, C, H, W) in [0, 1], mu and logvar (B, latent_dim).
        """
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction from the posterior mean."""
        return self.decode(self.encode(x)[0])

    def cells_over(self, band: tuple[float, float]) -> torch.Tensor | None:
        """Which code entries (latent_dim,) describe the rows `band` (fractions of the height).

        None for codes that are not laid out on the image's grid: every entry may touch every row.
        """
        return None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # Hub plumbing -------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The constructor arguments plus the class name, as written to config.json."""
        config = {**(self._hub_mixin_config or {}), "architecture": type(self).__name__}
        return json.loads(json.dumps(config))  # tuples become lists, as they will in the file

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)
        (save_directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2, sort_keys=True))
        if self.latent_stats is not None:
            self.latent_stats.save(save_directory / LATENT_STATS_FILE)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ) -> HubVAE:
        """Load safetensors weights only (never pickle), strictly, plus the latent statistics."""

        def fetch(filename: str) -> str:
            if os.path.isdir(model_id):
                path = os.path.join(model_id, filename)
                if not os.path.isfile(path):
                    raise WeightsError(f"{path} is missing")
                return path
            return hf_hub_download(
                repo_id=model_id,
                filename=filename,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )

        config_path = fetch(CONFIG_FILE)  # without it the defaults would silently stand in
        try:
            model = cls(**model_kwargs)
        except (ValueError, TypeError) as error:
            raise WeightsError(f"{config_path} does not describe a ConvVAE: {error}") from error
        weights_path = fetch(WEIGHTS_FILE)
        model.load_weights(weights_path, strict=strict)
        try:
            stats_path = fetch(LATENT_STATS_FILE)
        except (WeightsError, EntryNotFoundError):
            stats_path = None
        if stats_path is not None:
            model.latent_stats = LatentStats.load(stats_path)
        return model.to(map_location).eval()

    def load_weights(self, path: str | Path, strict: bool = True) -> None:
        """Load a safetensors state dict, refusing missing, unexpected or mis-shaped tensors."""
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors raises several types for a bad header
            raise WeightsError(f"{path} is not a readable safetensors file: {error}") from error
        own = self.state_dict()
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise WeightsError(
                    f"{path} does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
        wrong = [
            f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ]
        if wrong:
            raise WeightsError(f"{path} has tensors of the wrong shape for this config: {wrong[:3]}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items() if k in own}, strict=strict)


class ConvVAE(HubVAE):
    """A convolutional variational autoencoder for square RGB images.

    The encoder halves the resolution once per entry of `channels`, the decoder mirrors it.
    Stages at `res_block_max_size` pixels or less get `res_blocks` residual blocks each.

    The code z is either one global vector, reached from the last feature map through a
    linear layer, or (`spatial_latent`) a small map of codes, one short vector per cell of
    the last feature map, reached through 1x1 convolutions. Either way `encode` and `decode`
    speak flat vectors of `latent_dim` numbers, so the latent operations need not know.
    A spatial code keeps each region's detail (the eyes, the frames) in its own cells.

    Args:
        image_size: Side of the square input, in pixels; must divide by 2 ** len(channels).
        in_channels: Colour channels of the images (3 for RGB).
        channels: Feature maps after each downsampling step of the encoder.
        latent_dim: Size of the latent code z.
        res_blocks: Residual blocks per stage at low resolution (encoder and decoder).
        res_block_max_size: Largest feature-map side that gets residual blocks.
        likelihood: The decoder's p(x|z): one of `LIKELIHOODS`.
        log_sigma: Initial log standard deviation of the Gaussian decoder (shared by all
            pixels). It is trained with "gaussian_learned", tracks the batch optimum with
            "gaussian_optimal" and stays fixed with "gaussian_fixed" (log sqrt(1/2) makes the
            negative log-likelihood the summed MSE, up to a constant).
        eye_weight: How many times more the band across the eyes counts in the Gaussian
            likelihood than the rest of the face (a per-pixel precision map with mean 1; 1 is
            the plain likelihood). The glasses live there.
        spatial_latent: Codes on the last feature map's grid instead of one global vector;
            `latent_dim` must then divide by the grid's number of cells.
    """

    def __init__(
        self,
        image_size: int = 128,
        in_channels: int = 3,
        channels: tuple[int, ...] = (16, 32, 64, 128, 256),
        latent_dim: int = 256,
        res_blocks: int = 2,
        res_block_max_size: int = 16,
        likelihood: str = "gaussian_optimal",
        log_sigma: float = FIXED_LOG_SIGMA,
        eye_weight: float = 1.0,
        spatial_latent: bool = False,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        channels = tuple(channels)
        bottom = image_size // 2 ** len(channels)
        if bottom * 2 ** len(channels) != image_size or bottom < 1:
            raise ValueError(f"image_size {image_size} does not divide by 2**{len(channels)}")
        self.image_size, self.latent_dim, self.likelihood = image_size, latent_dim, likelihood
        self.bottom_shape = (channels[-1], bottom, bottom)

        encoder, size = [], image_size
        for c_in, c_out in zip((in_channels, *channels[:-1]), channels, strict=True):
            size //= 2
            encoder.append(down(c_in, c_out))
            if size <= res_block_max_size:
                encoder.extend(ResBlock(c_out) for _ in range(res_blocks))
        self.encoder = nn.Sequential(*encoder)
        self.spatial_latent = spatial_latent
        width, cells = channels[-1], bottom * bottom
        # to_posterior gives mean and log-variance; predicting log sigma^2 rather than sigma
        # keeps the variance positive without a clamp and the KL numerically stable.
        if spatial_latent:
            if latent_dim % cells:
                raise ValueError(f"latent_dim {latent_dim} does not divide into the {bottom}x{bottom} grid")
            self.latent_shape = (latent_dim // cells, bottom, bottom)
            self.to_posterior = nn.Conv2d(width, 2 * self.latent_shape[0], 1)
            self.from_latent = nn.Conv2d(self.latent_shape[0], width, 1)
        else:
            self.latent_shape = (latent_dim,)
            self.to_posterior = nn.Linear(width * cells, 2 * latent_dim)
            self.from_latent = nn.Linear(latent_dim, width * cells)
        decoder = []
        reversed_channels = channels[::-1]
        for c_in, c_out in zip(reversed_channels, (*reversed_channels[1:], reversed_channels[-1]), strict=True):
            if size <= res_block_max_size:
                decoder.extend(ResBlock(c_in) for _ in range(res_blocks))
            decoder.append(up(c_in, c_out))
            size *= 2
        self.decoder = nn.Sequential(*decoder, nn.Conv2d(channels[0], in_channels, 3, padding=1))
        self.log_sigma = nn.Parameter(torch.tensor(float(log_sigma)), requires_grad=likelihood == "gaussian_learned")
        # Derived from the config, so not saved with the weights (persistent=False).
        precision = eye_precision(image_size, eye_weight, EYE_Y) if eye_weight != 1 else None
        self.register_buffer("pixel_precision", precision, persistent=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) = N(mu, diag(exp(logvar))).

        Args:
            x: Images, float in [0, 1], shape (B, C, H, W).

        Returns:
            mu, logvar: each of shape (B, latent_dim).
        """
        features = self.encoder(x)
        if not self.spatial_latent:
            features = features.flatten(1)
        mu, logvar = self.to_posterior(features).chunk(2, dim=1)
        return mu.flatten(1), logvar.flatten(1)

    def cells_over(self, band: tuple[float, float]) -> torch.Tensor | None:
        """Code entries in the grid rows that overlap `band`, e.g. rows 2 to 4 of 8 for the eyes."""
        if not self.spatial_latent:
            return None
        depth, rows, columns = self.latent_shape
        top, bottom = torch.arange(rows) / rows, (torch.arange(rows) + 1) / rows
        overlaps = (bottom > band[0]) & (top < band[1])
        return overlaps.view(1, rows, 1).expand(depth, rows, columns).flatten()

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid decoder output, shape (B, C, H, W)."""
        features = self.from_latent(z.view(-1, *self.latent_shape))
        return self.decoder(features.view(-1, *self.bottom_shape))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for latent codes z of shape (B, latent_dim): the decoder's mean."""
        return torch.sigmoid(self.decode_logits(z))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample whose gradient reaches mu and logvar."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
