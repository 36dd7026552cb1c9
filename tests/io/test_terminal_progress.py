"""io/progress.py: a bar on a terminal, one summary line in a log, nothing for a silent rank.

The loops run in a child process whose stderr is a real pseudo-terminal (python's pty module) or a
pipe, as a user's terminal and a CI or KFP log would be.
"""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

# A resumed training loop (2 of 6 steps done before), noting its loss as training does, then the
# demo's named stages, then a rank that must stay silent.
LOOPS = """
from interactavatar.io.progress import Progress

steps = Progress("train tiny", 6, initial=2)
for step in steps.over(range(2, 6)):
    steps.note(loss=0.5 / (step + 1))
demo = Progress("demo", 2, unit="stage")
with demo.stage("make the data"):
    pass
with demo.stage("run the pipeline"):
    pass
silent = Progress("train tiny on rank 1", 3, enabled=False)
for _ in silent.over(range(3)):
    pass
"""


def run_on_terminal() -> str:
    controller, terminal = pty.openpty()
    # 24 rows of 100 columns, as a terminal window has (a new pty has 0 x 0, where tqdm draws nothing).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    child = subprocess.Popen([sys.executable, "-c", LOOPS], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal's last handle
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert child.wait(timeout=120) == 0
    return b"".join(chunks).decode()


def test_a_terminal_gets_bars_with_the_noted_loss():
    shown = run_on_terminal()
    assert "\r" in shown, "tqdm redraws its bar in place"
    assert "train tiny: 100%" in shown and "6/6" in shown and "loss=0.08333" in shown
    assert "demo: run the pipeline: 100%" in shown and "2/2" in shown
    assert "rank 1" not in shown
    assert "steps in" not in shown and "stages in" not in shown, "the bar is the summary"


def test_a_log_gets_one_summary_line_per_loop_and_no_bar():
    done = subprocess.run([sys.executable, "-c", LOOPS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("train tiny: 4 steps in ") and lines[0].endswith(" s (loss 0.08333)")
    assert lines[1].startswith("demo: 2 stages in ")
    assert done.stdout == "", "stdout stays the command's result"
