"""`interactavatar generate` against an endpoint, and batches in the public release's test-case format.

A cases file is a JSON list of objects: `mp4_img` (reference image), `prompt`, `speech_path`,
`video_id`, optionally `dwpose_mp4` (pose video, used by --mode pose) and the release's
`dwpose_img`, `structured_prompt`, `obj_img`, `obj_name` (accepted; the model conditions on the
image, the prompt and the speech). Relative paths resolve against the JSON file's folder.
Each case writes OUT_DIR/<video_id>.mp4 (and <video_id>_motion.mp4); a bad case is named and
skipped, the others still run, and the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("mp4_img", "prompt", "speech_path", "video_id")


@dataclass
class Case:
    image: Path
    speech: Path
    text: str
    video_id: str
    pose_video: Path | None = None


def parse_case(entry, base: Path) -> Case:
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object, got {type(entry).__name__}")
    missing = [name for name in REQUIRED if not isinstance(entry.get(name), str) or not entry[name].strip()]
    if missing:
        raise ValueError(f"missing or empty: {', '.join(missing)}")
    video_id = entry["video_id"]
    if Path(video_id).name != video_id or video_id in (".", ".."):
        raise ValueError(f"video_id {video_id!r} is not a plain file name")
    paths = {name: base / entry[name] for name in ("mp4_img", "speech_path", "dwpose_mp4") if entry.get(name)}
    for name, path in paths.items():
        if not path.is_file():
            raise ValueError(f"{name}: {path} not found")
    return Case(paths["mp4_img"], paths["speech_path"], entry["prompt"], video_id, paths.get("dwpose_mp4"))


def options_from_args(args: argparse.Namespace) -> dict:
    """The generate command's options as the endpoint's `options` object (unset ones left out)."""
    options = {"mode": args.mode, "steps": args.steps, "seed": args.seed, "num_frames": args.num_frames,
               "text_scale": args.text_scale, "audio_scale": args.audio_scale,
               "face_box": list(args.face_box) if args.face_box else None,
               "return_motion": args.mode != "audio"}
    return {name: value for name, value in options.items() if value is not None}


def local_generator(model_dir: Path, device: str) -> Callable[[Case, dict, Path, Path], dict]:
    from interactavatar.generation import InteractAvatarPipeline
    from interactavatar.media import load_image, load_speech, read_video

    pipeline = InteractAvatarPipeline.from_pretrained(model_dir, device)

    def generate(case: Case, options: dict, video_path: Path, motion_path: Path) -> dict:
        pose = read_video(case.pose_video)[0] if case.pose_video else None
        kwargs = {name: tuple(v) if name == "face_box" else v for name, v in options.items() if name != "return_motion"}
        result = pipeline(load_image(case.image), case.text, load_speech(case.speech, pipeline.cfg.audio.sample_rate),
                          pose_video=pose, **kwargs)
        result.save(video_path, motion_path)
        return result.timings

    return generate


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def endpoint_generator(url: str, protocol: str, timeout_s: float) -> Callable[[Case, dict, Path, Path], dict]:
    from interactavatar.serve.client import EndpointClient

    client = EndpointClient(url, protocol=protocol, timeout_s=timeout_s)

    def generate(case: Case, options: dict, video_path: Path, motion_path: Path) -> dict:
        pose = case.pose_video.read_bytes() if case.pose_video else None
        result = client.generate(case.image.read_bytes(), case.speech.read_bytes(), case.text, options, pose)
        for name, path in (("video", video_path), ("motion", motion_path)):
            if name in result.videos:
                _write_atomic(path, result.videos[name])
        return result.metadata

    return generate


def _with_spinner(description: str, work: Callable[[], dict]) -> dict:
    """The server does not stream progress: show that it is working and for how long."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
        bar.add_task(description, total=None)
        return work()


def run_batch(cases_file: Path, out_dir: Path, generate, options: dict) -> int:
    """Every case of `cases_file` through `generate`; 0 when all succeeded, 1 otherwise."""
    entries = json.loads(cases_file.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{cases_file}: expected a JSON list of cases")
    failures, seen = [], set()
    for index, entry in enumerate(entries):
        label = f"case {index} ({entry.get('video_id') if isinstance(entry, dict) else None})"
        try:
            case = parse_case(entry, cases_file.parent)
            if case.video_id in seen:
                raise ValueError(f"video_id {case.video_id!r} repeats an earlier case")
            seen.add(case.video_id)
            if options.get("mode") == "pose" and case.pose_video is None:
                raise ValueError("dwpose_mp4: required with --mode pose")
            if options.get("mode") != "pose":
                case.pose_video = None  # the release ships pose videos with cases of every mode
            video_path = out_dir / f"{case.video_id}.mp4"
            started = time.perf_counter()
            _with_spinner(f"[{index + 1}/{len(entries)}] {case.video_id}",
                          lambda c=case, v=video_path: generate(c, options, v, out_dir / f"{c.video_id}_motion.mp4"))
            print(json.dumps({"case": index, "video_id": case.video_id, "video": str(video_path),
                              "seconds": round(time.perf_counter() - started, 3)}))
        except Exception as err:  # one bad case must not stop the batch; it is reported
            failures.append(f"{label}: {err}")
            print(f"interactavatar generate: {label}: {err}", file=sys.stderr)
    if failures:
        print(f"interactavatar generate: {len(failures)} of {len(entries)} cases failed", file=sys.stderr)
    return 1 if failures else 0


def run_generate_command(args: argparse.Namespace) -> int:
    """`generate --endpoint URL ...` (one video) and `generate --cases FILE --out-dir DIR` (a batch)."""
    options = options_from_args(args)
    if args.endpoint:
        generate = endpoint_generator(args.endpoint, args.protocol, args.request_timeout)
    elif args.model:
        generate = local_generator(args.model, args.device)
    else:
        raise ValueError("give --model DIR (local) or --endpoint URL")
    if args.cases:
        if not args.out_dir:
            raise ValueError("--cases needs --out-dir")
        return run_batch(args.cases, args.out_dir, generate, options)
    for name in ("image", "audio", "text", "output"):
        if getattr(args, name) is None:
            raise ValueError(f"--{name} is required without --cases")
    case = Case(args.image, args.audio, args.text, args.output.stem, args.pose_video if args.mode == "pose" else None)
    motion_output = args.motion_output or args.output.with_name(f"{args.output.stem}_motion.mp4")
    import httpx

    from interactavatar.serve.client import EndpointError

    try:
        metadata = _with_spinner(f"generating on {args.endpoint}",
                                 lambda: generate(case, options, args.output, motion_output))
    except (EndpointError, httpx.TransportError) as err:
        raise ValueError(f"{args.endpoint}: {err}") from None
    print(json.dumps({"video": str(args.output), "motion": str(motion_output), **metadata}))
    return 0
