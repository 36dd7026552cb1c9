"""Reliability under injected faults: each fault is injected for real, and what the system did is
checked, not assumed. Figures: faults injected, faults survived, committed state lost.

Training faults hit real PIM stages (tiny preset, 8 synthetic clips from `interactavatar.data.synth`,
DeepSpeed on the CPU, a SQLite MLflow store), all with one set of settings (4 steps, a tag every
2, warmup 2: the training tests'), so that every stage that goes on after a fault must end with the
weights of one uninterrupted run of those settings, bit for bit. The stages run through the real
CLI: in a subprocess where a process must die or two trainers must overlap, otherwise its `main()`
in this process (the same code, bit-identical weights, seconds instead of a fresh interpreter's
imports); faults that need a function replaced (a full disk, a NaN loss) are injected in this
process, and their rows say so. The registration race is six `interactavatar register` processes
on a fresh SQLite store.

Per fault: how it was injected, what should happen, what did (exit codes, message excerpts,
checks), survived (every check held) and data lost: the committed state (the previous good
checkpoint tag, a model directory, a checkpoint folder a refused run must leave alone, registry
versions, the champion alias) that is gone or changed afterwards. The damage a fault does itself
(the tag whose bit it flipped) is the fault, not a loss.

    python -m benchmarks.bench_faults [--quick]
    python -m benchmarks.run --out BENCHMARKS.md --only faults
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from unittest import mock

import torch

from benchmarks.summary import headline
from tests.helpers.metrics import clips, write_metrics

PRESET = "tiny"
TITLE = "Reliability: injected faults in training and the registry (tiny preset, CPU)"
GOAL = "every injected fault survived, no committed state lost"
# The training tests' settings: tags at steps 2 and 4, a warmup so that the learning rate changes
# across a resume.
SETTINGS = {"steps": "4", "checkpoint-every": "2", "log-every": "1", "batch-size": "2", "lr": "0.002",
            "warmup-steps": "2", "seed": "0"}
MODEL_STATES = "mp_rank_00_model_states.pt"
OPTIMIZER_SHARD = "zero_pp_rank_0_mp_rank_00_optim_states.pt"
REGISTRATIONS = 6
WAIT_S = 600
EXCERPT = 400
SHA256 = re.compile(r"\b[0-9a-f]{64}\b")


@dataclass
class Outcome:
    """What a fault's run did: in words, the checks that failed (none: survived), the committed
    state lost."""

    happened: str
    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


def failing(checks: dict[str, bool]) -> list[str]:
    """The names of the checks that did not hold."""
    return [name for name, held in checks.items() if not held]


class RunsCode:
    """Unpickling it runs a statement: what a checkpoint from a hostile mirror or disk could hold."""

    def __init__(self, statement: str):
        self.statement = statement

    def __reduce__(self):
        return exec, (self.statement,)


class Lab:
    """The scratch folder every fault runs in: the data, a VAE, the MLflow store, and the weights of
    the uninterrupted run that every resumed stage must reproduce."""

    def __init__(self, root: Path):
        self.root, self.data, self.model = root, root / "data", root / "model"
        self.tracking = f"sqlite:///{root / 'mlflow.db'}"

    def prepare(self) -> None:
        import mlflow

        from interactavatar.config import EXPERIMENT, preset
        from interactavatar.data.synth import SynthSpec, synthesize
        from interactavatar.io.mlflow_store import experiment_id
        from interactavatar.model.bundle import init_model_directory

        synthesize(self.data, num_clips=8, seed=3, spec=SynthSpec.from_config(preset(PRESET)))
        # A randomly initialised model: its vae/ is every stage's --vae, the whole is what the
        # registrations register.
        init_model_directory(PRESET, self.model)
        # The experiment made here with its artifacts in scratch: otherwise MLflow puts them in ./mlruns.
        experiment_id(mlflow.MlflowClient(self.tracking), EXPERIMENT, (self.root / "artifacts").as_uri())
        code, err, _ = self.cli(self.train_argv(self.root / "straight"))
        if code != 0:
            raise RuntimeError(f"the uninterrupted reference run failed (exit {code}):\n{err[-3000:]}")

    def train_argv(self, out: Path, **changes: str) -> list[str]:
        """`interactavatar train pim` with SETTINGS (`changes` replace some: lr="0.001")."""
        flags = SETTINGS | {name.replace("_", "-"): value for name, value in changes.items()}
        argv = ["train", "pim", "--preset", PRESET, "--data", str(self.data), "--vae", str(self.model / "vae"),
                "--out", str(out)]
        return argv + [item for name, value in flags.items() for item in (f"--{name}", value)]

    def env(self) -> dict[str, str]:
        # Children train on this process's thread count: the same arithmetic, the same weights.
        return {**os.environ, "MLFLOW_TRACKING_URI": self.tracking, "OMP_NUM_THREADS": str(torch.get_num_threads())}

    def cli(self, argv: list[str]) -> tuple[int, str, list[str]]:
        """The CLI's `main(argv)` in this process: (exit code, its stderr, the warnings it raised)."""
        from interactavatar.cli import main

        stderr = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("always")
            code = main(argv)
        return code, stderr.getvalue(), [str(warning.message) for warning in caught]

    @contextlib.contextmanager
    def child(self, argv: list[str]) -> Iterator[tuple[subprocess.Popen, IO[bytes]]]:
        """The CLI in its own process, and the file its stderr goes to (a pipe read late would block
        it); killed if it still runs when the block ends."""
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen([sys.executable, "-m", "interactavatar.cli", *argv], env=self.env(),
                                       cwd=self.root, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                yield process, stderr
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()

    def finished(self, process: subprocess.Popen, stderr: IO[bytes]) -> str:
        """`exit N` once the child ends, with the CLI's report when N is not 0."""
        if process.wait(WAIT_S) == 0:
            return "exit 0"
        stderr.seek(0)
        return f"exit {process.returncode}: {self.short(cli_line(stderr.read().decode(errors='replace')))}"

    def partial(self, name: str, stop_after: int) -> Path:
        """An --out trained `stop_after` steps of the reference settings and left without a model, as
        a trainer stopped there leaves it (tags up to that step)."""
        from interactavatar.cli import build_parser
        from interactavatar.train.commands import spec_from_args
        from interactavatar.train.engine import shutdown
        from interactavatar.train.stages import run_stage

        out = self.root / name
        try:
            run_stage(spec_from_args(build_parser().parse_args(self.train_argv(out))), stop_after=stop_after)
        finally:
            shutdown()
        return out

    def versus_reference(self, out: Path) -> str:
        """"bit-identical" when out's weights are the uninterrupted run's, else how they differ."""
        from safetensors.torch import load_file

        if not (out / "model.safetensors").is_file():
            return "no model written"
        straight, other = (load_file(str(path / "model.safetensors")) for path in (self.root / "straight", out))
        if straight.keys() != other.keys():
            return "other tensors than the uninterrupted run's"
        differ = [name for name in straight if not torch.equal(straight[name], other[name])]
        return f"{len(differ)} of {len(straight)} tensors differ" if differ else "bit-identical"

    def short(self, text: str) -> str:
        """One line, scratch paths cut to their part below it and hashes to their start; past
        EXCERPT characters its head and tail (a message ends with the differences and the way out)."""
        line = SHA256.sub(lambda match: match.group(0)[:8] + "…", " ".join(text.replace(str(self.root) + "/", "").split()))
        half = EXCERPT // 2
        return line if len(line) <= EXCERPT else f"{line[:half]} […] {line[-half:]}"


def cli_line(stderr: str) -> str:
    """The CLI's own report: its last line starting with `interactavatar ` (the rest is logging)."""
    lines = [line for line in stderr.splitlines() if line.startswith("interactavatar ")]
    return lines[-1] if lines else (stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]


def tag(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:08d}"


def pointer(out: Path) -> str | None:
    path = out / "checkpoints" / "LATEST"
    return path.read_text() if path.is_file() else None


def snapshot(out: Path) -> dict[str, str]:
    """Every file below `out` and its sha256: what a refused run must leave as it found it."""
    return {path.relative_to(out).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(out.rglob("*")) if path.is_file()}


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The files removed or rewritten between two snapshots, then those added."""
    gone = [f"{name} {'removed' if name not in after else 'rewritten'}" for name in before if after.get(name) != before[name]]
    return gone + [f"{name} written" for name in after if name not in before]


def intact(folder: Path) -> bool:
    from interactavatar.train.integrity import verify_tag

    return folder.is_dir() and verify_tag(folder)[1] == []


def flip_a_bit(path: Path) -> None:
    """What a failing disk or a bad copy does: the size stays, one bit changes."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def wait_for(condition: Callable[[], bool], process: subprocess.Popen) -> None:
    """Poll until `condition()` holds or `process` ends (or WAIT_S pass)."""
    deadline = time.monotonic() + WAIT_S
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


# The faults. Each takes the lab and returns what happened.

def killed_stage(lab: Lab) -> Outcome:
    out = lab.root / "killed"
    argv = lab.train_argv(out)
    with lab.child(argv) as (process, _):
        wait_for(lambda: pointer(out) is not None, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
    at_kill, tags = pointer(out), sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    model_at_kill = (out / "model.safetensors").exists()
    committed_intact = at_kill is not None and intact(out / "checkpoints" / at_kill)
    with lab.child(argv) as (rerun, stderr):
        rerun_text = lab.finished(rerun, stderr)
    weights = lab.versus_reference(out)
    return Outcome(f"exit {process.returncode} (SIGKILL) with LATEST {at_kill}, tags on disk {tags}, "
                   f"{'a' if model_at_kill else 'no'} model yet; rerun {rerun_text}, weights {weights}",
                   failing({"killed before the end": process.returncode == -signal.SIGKILL and not model_at_kill,
                            "rerun exit 0": rerun.returncode == 0, "bit-identical": weights == "bit-identical"}),
                   [] if committed_intact else [f"the committed tag {at_kill} (fails its integrity check)"])


def flipped_bit(lab: Lab) -> Outcome:
    out = lab.partial("flipped", stop_after=4)
    bad = tag(out, 4) / MODEL_STATES
    flip_a_bit(bad)
    code, err, warned = lab.cli(lab.train_argv(out))
    fallback = [w for w in warned if "resuming from step-00000002" in w and f"{bad}: sha256 is " in w]
    weights = lab.versus_reference(out)
    return Outcome(f"exit {code}; warning: {lab.short(fallback[0]) if fallback else '(none)'}; weights {weights}",
                   failing({"exit 0": code == 0, "warning names the file": bool(fallback),
                            "bit-identical": weights == "bit-identical", "step 4 saved again, whole": intact(tag(out, 4))}),
                   [] if intact(tag(out, 2)) else ["step-00000002 (the previous good tag)"])


def every_tag_damaged(lab: Lab) -> Outcome:
    out = lab.partial("all-damaged", stop_after=4)
    flip_a_bit(tag(out, 4) / OPTIMIZER_SHARD)
    truncated = tag(out, 2) / MODEL_STATES
    truncated.write_bytes(truncated.read_bytes()[:1000])
    before = snapshot(out)
    code, err, _ = lab.cli(lab.train_argv(out))
    line, lost = cli_line(err), changed(before, snapshot(out))
    return Outcome(f"exit {code}: {lab.short(line)}",
                   failing({"exit 2": code == 2, "no checkpoint passes": "no checkpoint passes its integrity check" in line,
                            "names the flipped file": f"{tag(out, 4) / OPTIMIZER_SHARD}: sha256 is " in line,
                            "names the truncated file": f"{truncated}: size is 1000 bytes" in line,
                            "wrote nothing": not lost}), lost)


def pickle_runs_code(lab: Lab) -> Outcome:
    from interactavatar.train.integrity import TagRecord, record_tag

    out = lab.partial("pickle", stop_after=4)
    marker, payload = lab.root / "code-ran", tag(out, 4) / MODEL_STATES
    torch.save({"module": RunsCode(f"open({str(marker)!r}, 'w').write('pwned')")}, payload)
    # Whoever can write the files can rewrite their record: the hashes then match.
    old = TagRecord.read(tag(out, 4))
    record_tag(tag(out, 4), old.tag, old.step, old.settings)
    before = snapshot(out)
    code, err, _ = lab.cli(lab.train_argv(out))
    line, ran, lost = cli_line(err), marker.exists(), changed(before, snapshot(out))
    # The control: DeepSpeed's own loader (weights_only=False) runs the payload, so it was live.
    torch.load(payload, weights_only=False)
    live = marker.exists()
    return Outcome(f"exit {code}: {lab.short(line)}; marker {'WRITTEN' if ran else 'absent'}; "
                   f"control torch.load(weights_only=False) {'wrote' if live else 'did not write'} it",
                   failing({"exit 2": code == 2, "refused to unpickle": f"{payload}: refused to unpickle it" in line,
                            "code never ran": not ran, "the payload was live": live, "wrote nothing": not lost}), lost)


def full_disk(lab: Lab) -> Outcome:
    from interactavatar.train import checkpoint_io

    out = lab.root / "disk-full"
    full = tag(out, 4) / OPTIMIZER_SHARD

    def disk_full_for_the_shard(path, *args, **kwargs):
        return open("/dev/full" if os.fspath(path) == str(full) else path, *args, **kwargs)

    with mock.patch.object(checkpoint_io, "open", disk_full_for_the_shard, create=True):
        code, err, _ = lab.cli(lab.train_argv(out))
    line, latest, half = cli_line(err), pointer(out), tag(out, 4).exists()
    model_after_failure = (out / "model.safetensors").exists()
    rerun, _, _ = lab.cli(lab.train_argv(out))
    weights = lab.versus_reference(out)
    return Outcome(f"exit {code}: {lab.short(line)}; LATEST {latest}, half-written tag "
                   f"{'left' if half else 'removed'}; rerun exit {rerun}, weights {weights}",
                   failing({"exit 1": code == 1, "says the disk is full": "the disk is full" in line,
                            "resumes from step 2": f"resumes from {tag(out, 2)} once there is space" in line,
                            "no model": not model_after_failure, "half tag removed": not half,
                            "rerun exit 0": rerun == 0, "bit-identical": weights == "bit-identical"}),
                   [] if latest == "step-00000002" else [f"step-00000002 as the resume point (LATEST: {latest})"])


def second_trainer(lab: Lab) -> Outcome:
    out = lab.root / "locked"
    with lab.child(lab.train_argv(out)) as (holder, stderr):
        wait_for(lambda: _lock_holder(out) == holder.pid, holder)
        code, err, _ = lab.cli(lab.train_argv(out))
        holder_on = holder.poll() is None
        holder_text = lab.finished(holder, stderr)
    line, weights = cli_line(err), lab.versus_reference(out)
    return Outcome(f"second (in this process) exit {code}: {lab.short(line)}; holder (subprocess) "
                   f"{'still training' if holder_on else 'gone'} after the refusal, {holder_text}, its weights {weights}",
                   failing({"exit 2": code == 2, "names the holder": f"in use by another trainer (pid {holder.pid} on host "
                                                                      in line,
                            "holder unharmed": holder_on and holder.returncode == 0,
                            "lock released": not (out / "trainer.lock").exists()}),
                   [] if weights == "bit-identical" else [f"the holder's model directory ({weights})"])


def _lock_holder(out: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((out / "trainer.lock").read_text())["pid"]
    return None


def other_settings(lab: Lab) -> Outcome:
    out = lab.partial("mismatch", stop_after=2)
    before = snapshot(out)
    code, err, _ = lab.cli(lab.train_argv(out, lr="0.001", seed="1"))
    line, lost = cli_line(err), changed(before, snapshot(out))
    return Outcome(f"exit {code}: {lab.short(line)}",
                   failing({"exit 2": code == 2,
                            "lists the lr": "engine.learning_rate: 0.002 in the checkpoint, 0.001 now" in line,
                            "lists the seed": "seed: 0 in the checkpoint, 1 now" in line, "wrote nothing": not lost}),
                   lost)


def loss_gone_nan(lab: Lab) -> Outcome:
    from interactavatar.train import stages

    out, real_micro_batch = lab.root / "nan", stages._micro_batch

    def nan_at_step_3(spec, data, layout, step, micro, device):
        """The third step's batch carries NaN features, as bad data would."""
        batch, randomness = real_micro_batch(spec, data, layout, step, micro, device)
        if step == 2:
            batch = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in batch.items()}
        return batch, randomness

    with mock.patch.object(stages, "_micro_batch", nan_at_step_3):
        code, err, _ = lab.cli(lab.train_argv(out))
    line, latest = cli_line(err), pointer(out)
    tags, model_after_failure = sorted(p.name for p in (out / "checkpoints").glob("step-*")), (out / "model.safetensors").exists()
    rerun, _, _ = lab.cli(lab.train_argv(out))
    weights = lab.versus_reference(out)
    return Outcome(f"exit {code}: {lab.short(line)}; LATEST {latest}, tags {tags}; rerun exit {rerun}, weights {weights}",
                   failing({"exit 1": code == 1, "names step 3": "not finite at step 3" in line,
                            "nothing saved after step 2": tags == ["step-00000002"] and not model_after_failure,
                            "rerun exit 0": rerun == 0, "bit-identical": weights == "bit-identical"}),
                   [] if latest == "step-00000002" else [f"step-00000002 as the resume point (LATEST: {latest})"])


def registration_race(lab: Lab) -> Outcome:
    import mlflow

    from interactavatar.config import MODEL_NAME
    from interactavatar.registry.mlflow import champion_version

    folder = lab.root / "registry"
    folder.mkdir()
    uri = f"sqlite:///{folder / 'fresh.db'}"
    env = lab.env() | {"MLFLOW_TRACKING_URI": uri}
    processes = [subprocess.Popen([sys.executable, "-m", "interactavatar.cli", "register", "--model", str(lab.model),
                                   "--metrics", str(write_metrics(folder / f"metrics-{i}.json", clips(0.3), clips(0.0)))],
                                  env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(REGISTRATIONS)]
    try:
        answers = [(process.communicate(timeout=WAIT_S), process.returncode) for process in processes]
    finally:
        for process in processes:  # only after a timeout: none left running behind the benchmark
            if process.poll() is None:
                process.kill()
    registered = [json.loads(out.splitlines()[-1]) for (out, _), code in answers if code == 0]
    refused = [cli_line(err) for (_, err), code in answers if code == 2 and "scored against no baseline" in err
               and f"champion of {MODEL_NAME} is version 1" in err]
    store_failures = len(answers) - len(registered) - len(refused)
    client = mlflow.MlflowClient(uri, uri)
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL_NAME}'"))
    champion = champion_version(MODEL_NAME, tracking_uri=uri)
    promoted = [r["version"] for r in registered if r["promoted"]]
    return Outcome(f"{len(registered)} registered (versions {[r['version'] for r in registered]}, promoted {promoted}), "
                   f"{len(refused)} refused by the gate ({lab.short(refused[0]) if refused else 'none'}), "
                   f"{store_failures} failed otherwise; registry: versions {versions}, champion {champion}",
                   failing({"one promoted": promoted == ["1"] and len(registered) == 1,
                            "five refused naming the champion": len(refused) == REGISTRATIONS - 1,
                            "none failed on the store": store_failures == 0}),
                   [] if versions == promoted == [champion] else
                   [f"registry holds versions {versions}, champion {champion}, for the registered {promoted}"])


@dataclass
class Fault:
    """A fault, how it is injected, what should happen, and the function that injects it and
    checks the outcome. `quick`: also in the quick run (the in-process ones: no fresh interpreter)."""

    name: str
    injected: str
    expected: str
    inject: Callable[[Lab], Outcome]
    quick: bool = False


FAULTS = [
    Fault("SIGKILL of a training stage", "`interactavatar train pim` subprocess SIGKILLed once LATEST names its first "
          "tag; the same command rerun", "the rerun resumes and ends bit-identical to the uninterrupted run",
          killed_stage),
    Fault("a flipped bit in the newest tag", "a stage stopped after step 4 (tags 2 and 4); one bit of step 4's "
          f"{MODEL_STATES} flipped on disk; the CLI rerun (in this process)",
          "falls back to step 2 with a warning naming the file; ends bit-identical", flipped_bit, quick=True),
    Fault("every tag damaged", f"step 4's {OPTIMIZER_SHARD} bit-flipped, step 2's {MODEL_STATES} cut to 1000 bytes; "
          "the CLI rerun (in this process)", "refused (exit 2) naming each file; nothing written",
          every_tag_damaged, quick=True),
    Fault("a checkpoint pickle that runs code", f"step 4's {MODEL_STATES} replaced by a pickle of exec(...) that "
          "writes a marker file, its MANIFEST rewritten to match; the CLI rerun (in this process)",
          "refused (exit 2), the marker never appears; nothing written", pickle_runs_code, quick=True),
    Fault("a full disk while a tag is written", f"in this process: step 4's {OPTIMIZER_SHARD} opened on /dev/full "
          "(every write fails with ENOSPC), all else on the real disk, as the training tests do; then the CLI rerun",
          "stops saying the disk is full; step 2 stays the resume point; the rerun ends bit-identical", full_disk,
          quick=True),
    Fault("a second trainer on the same --out", "a CLI subprocess trains; once it holds --out, the same command "
          "through the CLI in this process", "refused (exit 2) naming the holder; the holder finishes, its model "
          "bit-identical", second_trainer),
    Fault("a resume with another learning rate and seed", "a stage stopped after step 2; the CLI rerun (in this "
          "process) with --lr 0.001 --seed 1", "refused (exit 2) listing both differences; nothing written",
          other_settings, quick=True),
    Fault("a loss gone NaN", "in this process: the third step's batch replaced by NaN features (as the training tests "
          "do), through the CLI; then the CLI rerun with the batch mended",
          "stops naming step 3 before saving anything of it (LATEST stays step 2); the rerun ends bit-identical",
          loss_gone_nan, quick=True),
    Fault("six registrations at once on a fresh SQLite store", f"{REGISTRATIONS} `interactavatar register` "
          "subprocesses started together, each with a metrics file scored against the floor",
          "each answered by the gate: one registered and promoted, five refused naming the champion; one version, "
          "one champion", registration_race),
]


def row(number: int, fault: Fault, lab: Lab) -> dict:
    """The fault's table row: injected, judged, timed."""
    started = time.perf_counter()
    try:
        outcome = fault.inject(lab)
    except Exception as err:  # the injection itself broke: reported as a fault not survived
        outcome = Outcome(f"the injection raised {lab.short(''.join(traceback.format_exception_only(err)))}",
                          ["the injection ran"], ["unknown"])
    happened = outcome.happened + (f"; FAILED: {', '.join(outcome.failed)}" if outcome.failed else "")
    return {"#": number, "fault": fault.name, "injected": fault.injected, "expected": fault.expected,
            "happened": happened, "survived": "no" if outcome.failed else "yes",
            "data lost": "; ".join(outcome.lost) or "none", "s": round(time.perf_counter() - started)}


@contextlib.contextmanager
def _scratch():
    """A lab in a temporary folder; the process's environment and working folder as they were after
    (the stages set RANK/WORLD_SIZE/LOCAL_RANK; stray relative writes land in scratch)."""
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as root, contextlib.chdir(root):
        lab = Lab(Path(root))
        os.environ["MLFLOW_TRACKING_URI"] = lab.tracking
        try:
            yield lab
        finally:
            os.environ.clear()
            os.environ.update(saved)


def run(quick: bool = False) -> dict:
    chosen = [(number, fault) for number, fault in enumerate(FAULTS, 1) if fault.quick or not quick]
    with _scratch() as lab:
        lab.prepare()
        rows = [row(number, fault, lab) for number, fault in chosen]
    survived = sum(r["survived"] == "yes" for r in rows)
    lost = sum(r["data lost"] != "none" for r in rows)
    latest_text = f"{survived} of {len(rows)} survived, {lost} data lost"
    return {
        "title": TITLE,
        "goal": GOAL,
        "summary": headline("Injected faults (training, registry): not survived or losing committed state", GOAL,
                            latest=len(rows) - survived + lost, latest_text=latest_text, target=0),
        "rows": rows,
        "notes": [
            "Every stage: `interactavatar train pim --preset tiny` on 8 synthetic clips (seed 3), with a randomly "
            f"initialised tiny VAE, {' '.join(f'--{k} {v}' for k, v in SETTINGS.items())}, DeepSpeed ZeRO 2 on the "
            "CPU, a SQLite MLflow store; bit-identical: every tensor of model.safetensors equal to an uninterrupted "
            "run's (the CLI in this process; its subprocess runs give the same weights).",
            "In this process rather than for real: the full disk (one file of the tag opened on /dev/full, whose "
            "writes fail with the kernel's ENOSPC; filling a real filesystem needs a mount this machine does not "
            "give) and the NaN loss (the batch function replaced). Refusals and reruns go through the CLI's main() "
            "in this process: the same code as the command, without a fresh interpreter's imports.",
            "A stage stopped after step N (faults 2, 3, 4, 7) is trained by run_stage(stop_after=N), the tests' "
            "simulated preemption: its tags, no model.",
            "data lost: the committed state gone or changed afterwards (the previous good tag as the resume point, a "
            "model directory, a refused run's --out, compared file by file by sha256, registry versions and the "
            "champion alias); the damage the fault does itself is not counted.",
            "s: seconds the fault took, its setup included.",
        ],
        "faults_injected": len(rows),
        "faults_survived": survived,
        "faults_losing_data": lost,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
