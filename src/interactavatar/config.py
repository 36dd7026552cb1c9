"""Model configuration: dataclasses, the named size presets, YAML round-trips, and the names every
part of the system shares.

A preset fixes everything the weights depend on (stream sizes, VAE, encoders, resolutions),
so that a model directory's `config.yaml` alone rebuilds the network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Generation modes: text + audio + image -> video with its motion (the main one), motion only (PIM),
# audio-driven video without interaction (AIM), and video driven by an external motion video.
MODES = ("interact", "motion", "audio", "pose")
# How PIM reaches AIM: per-block residuals (the release), the last block's residual only, or PIM's
# hidden states added as they are (the last two for ablations).
INJECTIONS = ("residual", "last", "add")
# How an input image sets the model's sizes (InteractAvatarConfig.size_rule).
SIZE_RULES = ("fixed", "release")
# The release's video token grid over its motion token grid, on both axes (704 / 256 px = 11 / 4).
RELEASE_GRID_RATIO = (11, 4)
# The registered model, the endpoint's model name, and the MLflow experiment of every run.
MODEL_NAME = "interactavatar"
# The endpoint's bearer token file (a mounted Secret): read by `serve` and by the endpoint client.
AUTH_TOKEN_FILE_ENV = "INTERACTAVATAR_AUTH_TOKEN_FILE"
EXPERIMENT = "interactavatar"
# The registry gate when none is given (registry/gate.py; reasons in docs/training.md, "The default gate and why"): the
# primary metric with the margin its interval must clear, then guard metrics with the loss each
# tolerates. Names are per-clip metrics (evaluate/score.py).
DEFAULT_GATE = "grounding_iou:max:0,pck_body:max:0.05,wrong_object:min:0.1,ssim:max:0.05,sync_confidence:max:0.05"


@dataclass
class StreamConfig:
    """One Wan-style DiT stream (PIM or AIM); the two are isomorphic, layer for layer."""

    dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    patch_size: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


# The VAE kinds: our causal VAE (model/vae.py, trained by the vae stage) and the release's Wan2.2
# VAE (model/wan_vae.py: diffusers' AutoencoderKLWan).
VAE_KINDS = ("causal", "wan")
# The Wan2.2 VAE's per-channel latent statistics (the release's `Wan2_2_VAE`, 48 channels).
WAN22_LATENT_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENT_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)


@dataclass
class VAEConfig:
    """The 3D VAE shared by video, motion video and reference image. kind (one of VAE_KINDS):
    "causal", our causal conv VAE; "wan", the release's Wan2.2 VAE (diffusers' AutoencoderKLWan)."""

    kind: str = "causal"
    latent_channels: int = 48
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4)
    # Downsampling stages (between multiplier levels) that also halve time; 1+4k frames -> 1+k.
    temporal_downsample_levels: tuple[int, ...] = (1, 2)
    # Pixel patchify before the first conv (as in Wan2.2's VAE): a cheap first 2x of space.
    patch_size: int = 2
    # Latents are stored as (mean - latent_mean) / latent_std: one number ("causal"), or one per
    # latent channel ("wan" also takes per-channel tuples, as the Wan2.2 VAE's 48 values).
    latent_mean: float | tuple[float, ...] = 0.0
    latent_std: float | tuple[float, ...] = 1.0
    # "wan" only: the decoder's base width (None: base_channels; the release's is 256, since it
    # never passes its own) and residual blocks per encoder level (the decoder has one more).
    decoder_base_channels: int | None = None
    num_res_blocks: int = 2

    def __post_init__(self) -> None:
        if self.kind not in VAE_KINDS:
            raise ValueError(f"vae: kind={self.kind!r}, expected one of {VAE_KINDS}")
        for name in ("latent_mean", "latent_std"):
            value = getattr(self, name)
            if isinstance(value, (tuple, list)):
                if self.kind != "wan":
                    raise ValueError(f"vae: per-channel {name} needs kind 'wan' (kind {self.kind!r} takes one number)")
                if len(value) != self.latent_channels:
                    raise ValueError(f"vae: {name} has {len(value)} values for {self.latent_channels} latent channels")

    def as_kind(self, kind: str) -> VAEConfig:
        """This VAE's compression, latent width and base width in architecture `kind`. To "wan":
        Wan2.2's layout, two residual blocks per level and the last level as wide as the one before
        (its residual downsampling cannot widen a level it does not shrink: (1, 2, 4) -> (1, 2, 2))."""
        if kind == self.kind:
            return self
        multipliers = self.channel_multipliers
        if kind == "wan":
            multipliers = (*multipliers[:-1], multipliers[-2]) if len(multipliers) > 1 else multipliers
        return dataclasses.replace(self, kind=kind, channel_multipliers=multipliers, num_res_blocks=2,
                                   decoder_base_channels=None, latent_mean=0.0, latent_std=1.0)

    @property
    def spatial_compression(self) -> int:
        return self.patch_size * 2 ** (len(self.channel_multipliers) - 1)

    @property
    def temporal_compression(self) -> int:
        return 2 ** len(self.temporal_downsample_levels)


@dataclass
class TextConfig:
    """Frozen text encoder. kind: "umt5" (umT5 from `path`, transformers' UMT5EncoderModel layout),
    "minilm" (the packaged all-MiniLM-L6-v2), or "random" (a tiny random umT5 for tests, saved into
    the model dir)."""

    kind: str = "umt5"
    path: str | None = None
    dim: int = 4096
    max_tokens: int = 512


@dataclass
class AudioConfig:
    """Frozen wav2vec2 encoder and the MultiTalk-style projection to per-latent-frame tokens.
    kind: "wav2vec2" (from `path`) or "random" (a tiny random wav2vec2, saved into the model dir)."""

    kind: str = "wav2vec2"
    path: str | None = None
    num_layers: int = 12
    feature_dim: int = 768
    window: int = 5
    tokens_per_frame: int = 32
    projection_dim: int = 512
    # Width of each audio token (the release's output_dim); None: feature_dim, as in the release.
    token_width: int | None = None
    sample_rate: int = 16000
    fps: int = 25

    @property
    def token_dim(self) -> int:
        return self.token_width or self.feature_dim


@dataclass
class SamplerConfig:
    """How a model samples. guidance: "release" (two passes, one text scale, bad-CFG skipping of
    `skip_block` while t > skip_above; the default for imported release models) or "three-pass"
    (separate text and audio scales). negative_prompt: the unconditional pass's text; "" means
    zero features, the null condition our training drops text to."""

    steps: int = 40
    shift: float = 5.0
    text_scale: float = 5.0
    audio_scale: float = 7.5
    guidance: str = "three-pass"
    negative_prompt: str = ""
    skip_block: int | None = None
    skip_above: float = 800.0


@dataclass
class InteractAvatarConfig:
    name: str
    pim: StreamConfig
    aim: StreamConfig
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    video_size: tuple[int, int] = (704, 1408)  # (height, width)
    motion_size: tuple[int, int] = (256, 512)
    num_frames: int = 81
    injection: str = "residual"  # one of INJECTIONS
    gradient_checkpointing: bool = False
    # How an input image sets the sizes: "fixed" (every input is cropped to video_size and
    # motion_size) or "release" (the release's rule: the two sizes' short sides, the input's aspect
    # ratio; see sizes_for).
    size_rule: str = "fixed"

    def __post_init__(self) -> None:
        if self.pim.num_layers != self.aim.num_layers:
            raise ValueError("config: pim.num_layers and aim.num_layers must match (the aligner pairs blocks)")
        if (self.num_frames - 1) % self.vae.temporal_compression:
            raise ValueError(f"config: num_frames={self.num_frames} is not 1+{self.vae.temporal_compression}k")
        if self.injection not in INJECTIONS:
            raise ValueError(f"config: injection={self.injection!r}, expected one of {INJECTIONS}")
        if self.size_rule not in SIZE_RULES:
            raise ValueError(f"config: size_rule={self.size_rule!r}, expected one of {SIZE_RULES}")
        for name, (h, w) in (("video_size", self.video_size), ("motion_size", self.motion_size)):
            step = self.vae.spatial_compression * self.aim.patch_size[1]
            if h % step or w % step:
                raise ValueError(f"config: {name}={h}x{w} is not a multiple of {step}")
        # The aligner resizes PIM's token grid onto AIM's; the release's weights learned that map at
        # exactly 2.75 on both axes (motion 256 -> video 704 px), so every config keeps it.
        for axis, motion, video in zip(("height", "width"), self.motion_token_grid, self.token_grid, strict=True):
            if video * RELEASE_GRID_RATIO[1] != motion * RELEASE_GRID_RATIO[0]:
                raise ValueError(f"config: the {axis} token grids are {motion} (motion_size) and {video} (video_size); "
                                 f"the release keeps video = 2.75 x motion on both axes")

    @property
    def latent_frames(self) -> int:
        return self.latent_frames_for(self.num_frames)

    def latent_frames_for(self, num_frames: int) -> int:
        """Latent frames of a 1+tk-frame video (t = vae.temporal_compression): 1+k."""
        return 1 + (num_frames - 1) // self.vae.temporal_compression

    @property
    def latent_grid(self) -> tuple[int, int]:
        """(rows, cols) of a video latent: video_size over the VAE's spatial compression."""
        step = self.vae.spatial_compression
        return self.video_size[0] // step, self.video_size[1] // step

    def sizes_for(self, height: int, width: int) -> InteractAvatarConfig:
        """This config at the sizes an input image of (height, width) gets. Rule "release": the
        motion size keeps its short side and takes the input's aspect ratio, its long side rounded
        to the nearest multiple of 128 (at least 128); the video size is the motion size times the
        ratio of the two short sides (2.75 for the release's 704 / 256), so the token grids keep
        that ratio exactly (16:9 -> 256x512 motion, 704x1408 video)."""
        if self.size_rule == "fixed":
            return self
        motion_short, video_short = min(self.motion_size), min(self.video_size)
        aspect = max(height, width) / min(height, width)
        motion_long = max(128, round(motion_short * aspect / 128) * 128)
        video_long = motion_long * video_short // motion_short
        if video_long * motion_short != motion_long * video_short:
            raise ValueError(f"config: size_rule 'release': a motion long side of {motion_long} gives no whole "
                             f"video long side at {video_short}/{motion_short}")
        portrait = height > width
        motion = (motion_long, motion_short) if portrait else (motion_short, motion_long)
        video = (video_long, video_short) if portrait else (video_short, video_long)
        return dataclasses.replace(self, motion_size=motion, video_size=video)

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, cols) of AIM's video tokens per latent frame: the latent grid over the patch size."""
        (rows, cols), (_, patch_rows, patch_cols) = self.latent_grid, self.aim.patch_size
        return rows // patch_rows, cols // patch_cols

    @property
    def motion_token_grid(self) -> tuple[int, int]:
        """(rows, cols) of PIM's motion tokens per latent frame."""
        step = self.vae.spatial_compression
        _, patch_rows, patch_cols = self.pim.patch_size
        return self.motion_size[0] // step // patch_rows, self.motion_size[1] // step // patch_cols

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InteractAvatarConfig:
        parts = {
            "pim": StreamConfig, "aim": StreamConfig, "vae": VAEConfig,
            "text": TextConfig, "audio": AudioConfig, "sampler": SamplerConfig,
        }
        kwargs = dict(data)
        for key, part in parts.items():
            if key in kwargs:
                kwargs[key] = build_dataclass(part, kwargs[key], key)
        return build_dataclass(cls, kwargs, "config")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> InteractAvatarConfig:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


def build_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    """`cls(**data)`, lists as tuples, refusing fields `cls` does not have (named with `where`)."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


def _tiny() -> InteractAvatarConfig:
    # Patch 1 keeps the release's exact 2.75 between the token grids (4x4 motion, 11x11 video) at
    # small images: the grids need multiples of 4 and 11 tokens.
    stream = StreamConfig(dim=32, num_layers=2, num_heads=2, ffn_dim=64, freq_dim=32, patch_size=(1, 1, 1))
    return InteractAvatarConfig(
        name="tiny",
        pim=stream,
        aim=dataclasses.replace(stream),
        vae=VAEConfig(latent_channels=4, base_channels=8, channel_multipliers=(1, 2, 2),
                      temporal_downsample_levels=(0, 1), patch_size=2),
        text=TextConfig(kind="random", dim=32, max_tokens=16),
        audio=AudioConfig(kind="random", num_layers=2, feature_dim=16, tokens_per_frame=4, projection_dim=32),
        sampler=SamplerConfig(steps=4),
        video_size=(88, 88),
        motion_size=(32, 32),
        num_frames=5,
    )


def _demo() -> InteractAvatarConfig:
    # A few hundred tokens per stream, so that minutes on two CPU cores learn grounding.
    return InteractAvatarConfig(
        name="demo",
        pim=StreamConfig(dim=128, num_layers=4, num_heads=4, ffn_dim=384, freq_dim=64),
        aim=StreamConfig(dim=128, num_layers=4, num_heads=4, ffn_dim=384, freq_dim=64),
        # The release's VAE architecture (diffusers' AutoencoderKLWan) at 8x: in the demo's VAE
        # budget its round trip keeps far more of the motion videos than our CausalVAE (PCK body
        # 0.845 vs 0.632, hands 0.471 vs 0.404) for 1.36x the stage's time (BENCHMARKS.md, vae).
        vae=VAEConfig(kind="wan", latent_channels=16, base_channels=16, channel_multipliers=(1, 2, 2),
                      temporal_downsample_levels=(0, 1), patch_size=2, num_res_blocks=2),
        text=TextConfig(kind="minilm", dim=384, max_tokens=32),
        audio=AudioConfig(kind="random", num_layers=4, feature_dim=64, tokens_per_frame=8, projection_dim=128),
        sampler=SamplerConfig(steps=20),
        # The release's 2.75 between the token grids: 4x4 motion tokens, 11x11 video tokens.
        video_size=(176, 176),
        motion_size=(64, 64),
        num_frames=17,
    )


def _paper() -> InteractAvatarConfig:
    stream = StreamConfig(dim=3072, num_layers=30, num_heads=24, ffn_dim=14336)
    return InteractAvatarConfig(
        name="paper",
        pim=stream,
        aim=dataclasses.replace(stream),
        # The release's Wan2.2 VAE (TI2V-5B): 705M parameters, 48 channels, 16x space, 4x time.
        vae=VAEConfig(kind="wan", latent_channels=48, base_channels=160, decoder_base_channels=256,
                      channel_multipliers=(1, 2, 4, 4), temporal_downsample_levels=(1, 2), patch_size=2,
                      num_res_blocks=2, latent_mean=WAN22_LATENT_MEAN, latent_std=WAN22_LATENT_STD),
        text=TextConfig(kind="umt5", dim=4096, max_tokens=512),
        audio=AudioConfig(kind="wav2vec2"),
        # Sizes the release runs (16:9): the motion image's long side rounded to a multiple of 128,
        # the video 2.75x the motion on both axes, so the token grids keep the aligner's exact 2.75.
        video_size=(704, 1408),
        motion_size=(256, 512),
        num_frames=101,
        size_rule="release",
    )


PRESETS = {"tiny": _tiny, "demo": _demo, "paper": _paper}


def preset(name: str) -> InteractAvatarConfig:
    """A fresh config for a named size: "tiny" (unit tests), "demo" (CPU main job), "paper"."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
