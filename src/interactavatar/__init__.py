"""InteractAvatar-Ops: train, evaluate, register and serve text-driven interacting talking avatars."""

__version__ = "0.1.0"
