"""The model's API, and saving and loading it: round trips, strict keys, clear refusals."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vae_demo import ConvVAE, LatentStats, WeightsError
from vae_demo.baselines import SeedConvVAE, SeedMLPVAE
from vae_demo.hub import load_model


def tiny(**kwargs) -> ConvVAE:
    torch.manual_seed(0)
    return ConvVAE(**{"image_size": 32, "channels": (8, 16, 32), "latent_dim": 8, "res_blocks": 1, **kwargs}).eval()


def test_shapes_and_ranges():
    model = tiny()
    x = torch.rand(5, 3, 32, 32)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 8)
    recon, mu2, _ = model(x)
    assert recon.shape == x.shape and 0 <= recon.min() and recon.max() <= 1
    assert torch.equal(mu, mu2)
    assert torch.equal(model.reconstruct(x), model.decode(mu))


def test_bad_constructor_arguments_are_refused():
    with pytest.raises(ValueError, match="divide"):
        ConvVAE(image_size=30, channels=(8, 16))
    with pytest.raises(ValueError, match="likelihood"):
        ConvVAE(likelihood="laplace")


def test_save_and_load_round_trip(tmp_path):
    model = tiny(likelihood="gaussian_learned")
    model.latent_stats = LatentStats.fit(torch.randn(50, 8))
    model.latent_stats.directions["Eyeglasses"] = torch.ones(8)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == "ConvVAE" and config["latent_dim"] == 8 and config["channels"] == [8, 16, 32]

    loaded = ConvVAE.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    assert torch.equal(loaded.latent_stats.directions["Eyeglasses"], torch.ones(8))
    assert torch.allclose(loaded.latent_stats.cov, model.latent_stats.cov)
    assert isinstance(load_model(tmp_path / "m"), ConvVAE)


def test_spatial_latent_speaks_flat_codes_and_round_trips(tmp_path):
    model = tiny(spatial_latent=True, latent_dim=2 * 4 * 4)  # two numbers per cell of the 4x4 grid
    assert model.latent_shape == (2, 4, 4)
    x = torch.rand(3, 3, 32, 32)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 32)
    assert model.decode(mu).shape == x.shape
    model.save_pretrained(tmp_path / "grid")
    loaded = load_model(tmp_path / "grid")
    assert loaded.config["spatial_latent"] is True
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    with pytest.raises(ValueError, match="4x4 grid"):
        tiny(spatial_latent=True, latent_dim=8 * 3)


def test_cells_over_a_band_are_the_code_entries_that_draw_those_rows():
    model = tiny(spatial_latent=True, latent_dim=2 * 4 * 4)
    top = model.cells_over((0.0, 0.2))  # overlaps grid row 0 of 4 only
    assert top.shape == (32,) and top.sum() == 2 * 4
    assert top.view(2, 4, 4)[:, 0].all() and not top.view(2, 4, 4)[:, 1:].any()
    assert model.cells_over((0.3, 0.55)).view(2, 4, 4)[0].any(1).tolist() == [False, True, True, False]
    # a change confined to those entries redraws the top of the picture, hardly the bottom
    z = torch.randn(1, 32, generator=torch.Generator().manual_seed(0))
    change = (model.decode(z + 3.0 * top) - model.decode(z)).abs().mean((0, 1, 3))
    assert change[:8].mean() > 5 * change[-8:].mean()
    assert tiny().cells_over((0.0, 0.2)) is None  # one global code: every entry draws every row
    assert SeedMLPVAE(image_size=32).cells_over((0.0, 0.2)) is None


@pytest.mark.parametrize("baseline", [SeedConvVAE, SeedMLPVAE])
def test_seed_baselines_round_trip_through_load_model(tmp_path, baseline):
    torch.manual_seed(0)
    model = baseline(image_size=32).eval()
    model.save_pretrained(tmp_path / "seed")
    loaded = load_model(tmp_path / "seed")
    assert type(loaded) is baseline
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))


def test_missing_key_is_refused_naming_the_file(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)
    del state["to_posterior.weight"]
    save_file(state, weights)
    with pytest.raises(WeightsError, match="missing.*to_posterior.weight") as error:
        ConvVAE.from_pretrained(tmp_path / "m")
    assert "model.safetensors" in str(error.value)


def test_config_that_does_not_match_the_weights_is_refused(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config["latent_dim"] = 16
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="wrong shape"):
        load_model(tmp_path / "m")


def test_truncated_weights_are_refused(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_model(tmp_path / "m")


def test_missing_config_is_refused_rather_than_defaulted(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(WeightsError, match="config.json"):
        load_model(tmp_path / "m")
    with pytest.raises(WeightsError, match="config.json"):
        ConvVAE.from_pretrained(tmp_path / "m")


def test_half_precision_weights_load_into_float32(tmp_path):
    model = tiny()
    model.half().save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert next(loaded.parameters()).dtype == torch.float32
    assert loaded.reconstruct(torch.rand(1, 3, 32, 32)).isfinite().all()


def test_publishing_without_a_token_or_a_network_fails_clearly(tmp_path, monkeypatch):
    from vae_demo.hub import PublishError, publish

    tiny().save_pretrained(tmp_path / "m")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(PublishError, match="HF_TOKEN"):
        publish(tmp_path / "m", "someone/face-vae")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_for_test")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(PublishError) as error:
        publish(tmp_path / "m", "someone/face-vae")
    message = str(error.value)
    assert "could not publish" in message and "python -m vae_demo.hub" in message
    assert "hf_secret_token_for_test" not in message


def test_pickle_weights_are_never_loaded(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin")  # what the mixin would fall back to
    with pytest.raises(WeightsError, match="model.safetensors is missing"):
        load_model(tmp_path / "m")


def test_a_hub_model_is_fetched_at_the_pinned_revision(tmp_path, monkeypatch):
    model = tiny()
    model.save_pretrained(tmp_path / "snapshot")
    asked = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        asked.append((repo_id, filename, revision))
        path = tmp_path / "snapshot" / filename
        if not path.exists():
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setattr("vae_demo.hub.hf_hub_download", fake_download)
    monkeypatch.setattr("vae_demo.model.hf_hub_download", fake_download)
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", fake_download)  # the mixin reads config.json
    loaded = load_model("someone/face-vae", revision="0123abc")
    assert isinstance(loaded, ConvVAE)
    assert {revision for _, _, revision in asked} == {"0123abc"}
    assert {name for _, name, _ in asked} >= {"config.json", "model.safetensors"}


def test_eye_weight_is_config_not_weights(tmp_path):
    model = tiny(eye_weight=3.0)
    assert model.pixel_precision.shape == (32, 32) and "pixel_precision" not in model.state_dict()
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert torch.equal(loaded.pixel_precision, model.pixel_precision)
    assert tiny().pixel_precision is None
