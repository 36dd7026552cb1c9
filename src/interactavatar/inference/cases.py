"""`interactavatar generate`: cases (one from the flags, or a file of them in the public release's
test-case format) through a generator (a model directory here, or an endpoint).

A cases file is a JSON list of objects: `mp4_img` (reference image), `prompt`, `speech_path`,
`video_id`, optionally `obj_img` (the object the prompt names), `dwpose_img` (the reference's
pose), `dwpose_mp4` (pose video, used by --mode pose), and the release's `structured_prompt` and
`obj_name` (accepted, not used). Relative paths resolve against the JSON file's folder.
Each case writes OUT_DIR/<video_id>.mp4 (and <video_id>_motion.mp4); a bad case is named and
skipped, the others still run, and the exit status is 1 when any failed. A single case from the
flags is a batch of one whose error is the command's error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interactavatar.io.files import write_bytes_atomic

REQUIRED = ("mp4_img", "prompt", "speech_path", "video_id")


@dataclass
class Case:
    image: Path
    speech: Path
    text: str
    video_id: str
    output: Path  # the video, with the speech muxed in
    motion_output: Path  # the motion video
    pose_video: Path | None = None
    index: int = 0  # its place in the cases file
    object_image: Path | None = None  # the release's obj_img
    pose_image: Path | None = None  # the release's dwpose_img

    @property
    def label(self) -> str:
        return f"case {self.index} ({self.video_id})"


@dataclass
class BadCase:
    """A cases-file entry that did not make a case: reported, and counted as failed."""

    label: str
    error: str


# (case, options, progress label) -> ({"video": mp4 bytes, "motion": mp4 bytes}, metadata)
Generator = Callable[[Case, dict, str], tuple[dict[str, bytes], dict]]


def parse_case(entry, base: Path, out_dir: Path, index: int = 0) -> Case:
    """One cases-file entry (paths relative to `base`) -> a Case writing under `out_dir`."""
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object, got {type(entry).__name__}")
    missing = [name for name in REQUIRED if not isinstance(entry.get(name), str) or not entry[name].strip()]
    if missing:
        raise ValueError(f"missing or empty: {', '.join(missing)}")
    video_id = entry["video_id"]
    if Path(video_id).name != video_id or video_id in (".", ".."):
        raise ValueError(f"video_id {video_id!r} is not a plain file name")
    paths = {name: base / entry[name] for name in ("mp4_img", "speech_path", "dwpose_mp4", "obj_img", "dwpose_img")
             if entry.get(name)}
    for name, path in paths.items():
        if not path.is_file():
            raise ValueError(f"{name}: {path} not found")
    return Case(paths["mp4_img"], paths["speech_path"], entry["prompt"], video_id, out_dir / f"{video_id}.mp4",
                out_dir / f"{video_id}_motion.mp4", paths.get("dwpose_mp4"), index, paths.get("obj_img"),
                paths.get("dwpose_img"))


def load_cases(cases_file: Path, out_dir: Path, mode: str) -> list[Case | BadCase]:
    """Every entry of `cases_file` in order: a Case writing under `out_dir`, or why it is none."""
    entries = json.loads(cases_file.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{cases_file}: expected a JSON list of cases")
    cases: list[Case | BadCase] = []
    seen = set()
    for index, entry in enumerate(entries):
        try:
            case = parse_case(entry, cases_file.parent, out_dir, index)
            if case.video_id in seen:
                raise ValueError(f"video_id {case.video_id!r} repeats an earlier case")
            seen.add(case.video_id)
            if mode == "pose" and case.pose_video is None:
                raise ValueError("dwpose_mp4: required with --mode pose")
        except ValueError as err:
            cases.append(BadCase(f"case {index} ({entry.get('video_id') if isinstance(entry, dict) else None})",
                                 str(err)))
            continue
        if mode != "pose":
            case.pose_video = None  # the release ships pose videos with cases of every mode
        cases.append(case)
    return cases


def case_from_args(args: argparse.Namespace) -> Case:
    """The one case the flags describe (--image, --audio, --text, -o, --motion-output, --pose-video)."""
    if args.mode == "pose" and args.pose_video is None:
        raise ValueError("--mode pose needs --pose-video")
    motion_output = args.motion_output or args.output.with_name(f"{args.output.stem}_motion.mp4")
    return Case(args.image, args.audio, args.text, args.output.stem, args.output, motion_output,
                args.pose_video if args.mode == "pose" else None, object_image=args.object_image,
                pose_image=args.pose_image)


def options_from_args(args: argparse.Namespace) -> dict:
    """The generate command's options as the endpoint's `options` object (unset ones left out)."""
    options = {"mode": args.mode, "steps": args.steps, "seed": args.seed, "num_frames": args.num_frames,
               "text_scale": args.text_scale, "audio_scale": args.audio_scale,
               "face_box": list(args.face_box) if args.face_box else None,
               "return_motion": args.mode != "audio"}
    return {name: value for name, value in options.items() if value is not None}


def local_generator(model_dir: Path, device: str) -> Generator:
    """Generation on this machine, with a progress bar over the sampling steps."""
    from tqdm import tqdm

    from interactavatar.inference.pipeline import InteractAvatarPipeline
    from interactavatar.io.media import load_image, load_speech, read_video

    pipeline = InteractAvatarPipeline.from_pretrained(model_dir, device)

    def generate(case: Case, options: dict, label: str) -> tuple[dict[str, bytes], dict]:
        pose = read_video(case.pose_video)[0] if case.pose_video else None
        kwargs = {name: tuple(v) if name == "face_box" else v for name, v in options.items() if name != "return_motion"}
        image, speech = load_image(case.image), load_speech(case.speech, pipeline.cfg.audio.sample_rate)
        with tqdm(desc=f"{label}sampling", unit="step") as bar:

            def progress(step: int, steps: int) -> None:
                bar.total = steps
                bar.update(step - bar.n)

            result = pipeline(image, case.text, speech, pose_video=pose, progress=progress,
                              object_image=load_image(case.object_image, "RGBA") if case.object_image else None,
                              pose_image=load_image(case.pose_image) if case.pose_image else None, **kwargs)
        video, motion = result.to_mp4_bytes(with_motion=True)
        return {name: data for name, data in (("video", video), ("motion", motion)) if data is not None}, result.timings

    return generate


def endpoint_generator(url: str, protocol: str, timeout_s: float, token_file: Path | None = None) -> Generator:
    """Generation on a serving endpoint (its bearer token from `token_file`, else
    $INTERACTAVATAR_AUTH_TOKEN_FILE), with a spinner while it works; its refusals and connection
    errors are ValueErrors naming the endpoint."""
    import httpx

    from interactavatar.inference.client import EndpointClient, EndpointError

    client = EndpointClient(url, protocol=protocol, timeout_s=timeout_s, token_file=token_file)

    def generate(case: Case, options: dict, label: str) -> tuple[dict[str, bytes], dict]:
        image, speech = case.image.read_bytes(), case.speech.read_bytes()
        pose = case.pose_video.read_bytes() if case.pose_video else None
        extra = {name: getattr(case, name).read_bytes() for name in ("object_image", "pose_image")
                 if getattr(case, name) is not None}
        try:
            result = _with_spinner(f"{label}generating on {url}",
                                   lambda: client.generate(image, speech, case.text, options, pose, **extra))
        except (EndpointError, httpx.TransportError) as err:
            raise ValueError(f"{url}: {err}") from None
        return result.videos, result.metadata

    return generate


def _with_spinner(description: str, work: Callable):
    """The server does not stream progress: show that it is working and for how long."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
        bar.add_task(description, total=None)
        return work()


def run_cases(cases: list[Case | BadCase], generate: Generator, options: dict, *, keep_going: bool = True) -> int:
    """Every case through `generate`: its videos written (atomically) and a JSON line on stdout.

    keep_going: a failed case is named on stderr and the rest still run; the exit status is 1
    when any failed. Otherwise the first error is raised (the single case from the flags)."""
    failures = []
    for number, case in enumerate(cases, 1):
        try:
            if isinstance(case, BadCase):
                raise ValueError(case.error)
            started = time.perf_counter()
            label = f"[{number}/{len(cases)}] {case.video_id}: " if len(cases) > 1 else ""
            videos, metadata = generate(case, options, label)
            for name, path in (("video", case.output), ("motion", case.motion_output)):
                if name in videos:
                    write_bytes_atomic(path, videos[name])
        except Exception as err:  # one bad case must not stop the batch; it is reported
            if not keep_going:
                raise
            failures.append(f"{case.label}: {err}")
            print(f"interactavatar generate: {case.label}: {err}", file=sys.stderr)
            continue
        print(json.dumps({"case": case.index, "video_id": case.video_id, "video": str(case.output),
                          "motion": str(case.motion_output), "seconds": round(time.perf_counter() - started, 3),
                          **metadata}))
    if failures:
        print(f"interactavatar generate: {len(failures)} of {len(cases)} cases failed", file=sys.stderr)
    return 1 if failures else 0


def run_generate_command(args: argparse.Namespace) -> int:
    """`generate`: one case from the flags, or `--cases FILE --out-dir DIR`, locally (--model) or
    on an endpoint (--endpoint)."""
    missing = [] if args.model or args.endpoint else ["--model DIR (or --endpoint URL)"]
    if args.cases:
        if missing:
            raise ValueError(f"missing {missing[0]}")
        if not args.out_dir:
            raise ValueError("--cases needs --out-dir")
        cases = load_cases(args.cases, args.out_dir, args.mode)
    else:
        missing += [f"--{name}" for name in ("image", "audio", "text", "output") if getattr(args, name) is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (or use --cases FILE --out-dir DIR)")
        cases = [case_from_args(args)]
    if args.endpoint:
        generate = endpoint_generator(args.endpoint, args.protocol, args.request_timeout, args.auth_token_file)
    else:
        generate = local_generator(args.model, args.device)
    return run_cases(cases, generate, options_from_args(args), keep_going=bool(args.cases))
