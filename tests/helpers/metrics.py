"""metrics.json files as `interactavatar evaluate` writes them, for registry tests."""

import json

GUARDS = {"pck_body": 0.6, "wrong_object": 0.0, "ssim": 0.5, "sync_confidence": 0.4}


def write_metrics(path, iou, against, baseline=None, name="interactavatar", data_rev="abc123", **new_guards):
    """A metrics.json as `evaluate` writes it: the new model's per-clip box IoU (`iou`) scored in one
    run with the untrained floor's or, given `baseline` (a version), that version's (`against`);
    the guard metrics equal on both sides unless given."""
    system = "baseline" if baseline else "floor"
    per_clip = [{"clip_id": f"c{i}", "model": {"grounding_iou": new, **GUARDS, **new_guards},
                 system: {"grounding_iou": old, **GUARDS}}
                for i, (new, old) in enumerate(zip(iou, against, strict=True))]
    metrics = {"model": {"grounding_iou": sum(iou) / len(iou), "psnr": 20.0},
               "per_clip": per_clip,
               "eval_set": {"data_rev": data_rev, "split": "test", "clip_ids": [c["clip_id"] for c in per_clip]}}
    if baseline:
        metrics["comparison"] = {"baseline": {"reference": f"models:/{name}@champion", "version": baseline}}
    path.write_text(json.dumps(metrics))
    return path


def clips(mean, spread=0.02, n=8):
    """`n` per-clip scores around `mean`, varying by clip."""
    return [mean + spread * ((i % 3) - 1) for i in range(n)]
