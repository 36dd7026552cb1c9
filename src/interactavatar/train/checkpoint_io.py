"""How DeepSpeed writes and reads a tag's files here: loads unpickle tensors only, and only files whose
hashes were checked; writes report a full disk as one.

DeepSpeed's own `TorchCheckpointEngine` loads with `torch.load(weights_only=False)`: a file that
pickles a call runs it, so whoever can write a checkpoint (the S3 mirror, a shared disk) could run
code in a training pod. A tag's files hold tensors, plain containers and the few DeepSpeed objects
in SAFE_GLOBALS (measured on ZeRO 0 to 3 with a warmup schedule); `weights_only=True` rebuilds those
and refuses anything else. DeepSpeed has no setting for it, so `engine.create_engine` swaps this
subclass in for the engine's checkpoint engine (every load and save of a tag goes through it).

It loads only files that `CheckpointManager` verified against the tag's record first (`verified`),
so that no file is unpickled before its sha256 was checked, whichever file DeepSpeed asks for.

torch.save reports a full disk as "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs
598"; written through a Python file object, the OSError(ENOSPC) of the failed write is that error's
context, and comes out as the error (naming the file), which `CheckpointManager` turns into a message
that says so.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

from interactavatar.train.integrity import MANIFEST, CorruptCheckpoint

# The classes DeepSpeed pickles into its checkpoints besides tensors and containers: the ZeRO
# optimizer's loss scaler (DynamicLossScaler under fp16), its parameter fragment addresses, and the
# ZeRO stage.
SAFE_GLOBALS = [LossScaler, DynamicLossScaler, fragment_address, ZeroStageEnum]


class UnsafeCheckpoint(ValueError):
    """A checkpoint file that pickles more than tensors and DeepSpeed's objects."""


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind `err` (itself, or one it was raised from or while handling)."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


class VerifiedCheckpointEngine(TorchCheckpointEngine):
    def __init__(self, config_params=None):
        super().__init__(config_params)
        # Resolved paths of the files that may be loaded: those of the verified tag.
        self.verified: set[Path] = set()

    def save(self, state_dict, path: str) -> None:
        try:
            with open(path, "wb") as handle:
                torch.save(state_dict, handle, _use_new_zipfile_serialization=self.zipfile_serialization)
        except Exception as err:
            cause = _os_error(err)
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, path) from err

    def load(self, path: str, map_location=None):
        if Path(path).resolve() not in self.verified:
            raise CorruptCheckpoint(f"{path}: not a file of a tag whose {MANIFEST} was verified; refusing to "
                                    "unpickle it unchecked")
        try:
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            # torch's message is a paragraph; the reason is the first sentence after "WeightsUnpickler error:".
            reason = " ".join(str(err).partition("WeightsUnpickler error:")[2].split()).split(". ")[0]
            raise UnsafeCheckpoint(f"{path}: refused to unpickle it ({reason or err}): a checkpoint holds tensors and "
                                   "the DeepSpeed objects in interactavatar.train.checkpoint_io.SAFE_GLOBALS only, and "
                                   "a file that could run code is never loaded (if a new DeepSpeed version pickles a "
                                   "class of its own, add it there)") from err
