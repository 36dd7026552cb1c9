"""A stage's training curve as a file: `--out/training_curve.tsv`, one row (step, loss) per
logged step, the file dvc.yaml's `training_loss` plot reads (`dvc plots show`).

MLflow holds the same values, but only where a tracking server is reachable, and DVC plots read
files in the workspace. A row is appended as each logged step ends, so the file grows with the
run. A resumed stage restarts from its checkpoint's step: the rows logged after that step (lost
work, about to be trained again) are dropped when the stage opens, and a half-written last line
with them, so the steps stay increasing and unique.
"""

from __future__ import annotations

from pathlib import Path

from interactavatar.io.files import write_text_atomic

CURVE_FILE = "training_curve.tsv"
HEADER = "step\tloss\n"


class TrainingCurve:
    """The curve of the stage training into `out`, resumed at `resume_step` (0: a new run).
    `enabled`: False on every process but the one that writes the stage's outputs."""

    def __init__(self, out: Path, resume_step: int, enabled: bool = True) -> None:
        self.path = Path(out) / CURVE_FILE
        self.enabled = enabled
        if enabled:
            kept = [line for line in _rows(self.path) if int(line.split("\t")[0]) <= resume_step]
            write_text_atomic(self.path, HEADER + "".join(kept))

    def append(self, step: int, metrics: dict[str, float]) -> None:
        """Add the row of `step` (`metrics` holds at least its "loss")."""
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(f"{step}\t{metrics['loss']:.6g}\n")


def _rows(path: Path) -> list[str]:
    """The complete, well-formed data lines of an existing curve file (none when it is missing)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines(keepends=True)[1:]:
        fields = line.rstrip("\n").split("\t")
        if line.endswith("\n") and len(fields) == 2 and fields[0].isdigit() and _is_number(fields[1]):
            rows.append(line)
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
