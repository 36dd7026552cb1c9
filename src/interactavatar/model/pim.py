"""PIM: the motion stream. A plain DiT over motion-video latents: it plans the skeleton and the
object box from the reference image and the text (and parses the scene in the detection task)."""

from interactavatar.model.stream import DiTStream


class PIM(DiTStream):
    pass
