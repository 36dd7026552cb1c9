"""The InteractAvatar network: two Wan-style DiT streams, the M2V aligner, the VAE and encoders."""

from interactavatar.model.interact_avatar import InteractAvatar, Noisy

__all__ = ["InteractAvatar", "Noisy"]
