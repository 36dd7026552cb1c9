"""io.media's readers for media from strangers (what the endpoint decodes): the header is checked
before anything is decoded, no more is read than it declares, and what they return is what the
file readers and the pipeline would have made of the same bytes."""

import numpy as np
import pytest
import soundfile
from helpers.media import mp4_bytes, png_bytes, wav_bytes, with_declared_rate

from interactavatar.io import media

LIMITS = {"max_seconds": 60.0, "min_seconds": 0.04}


def test_speech_is_refused_from_its_header_before_a_sample_is_decoded(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a sample was decoded")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    monkeypatch.setattr(media, "resample_poly", no_decoding)
    for data, phrase in ((with_declared_rate(wav_bytes(2, 16000), 4_000_000), "declares 4000000 Hz"),
                         (with_declared_rate(wav_bytes(2, 16000), 4000), "declares 4000 Hz"),
                         (wav_bytes(0.5, 16000, channels=9), "declares 9 channels"),
                         (wav_bytes(61, 8000), "longer than the limit"),
                         (wav_bytes(0.01, 8000), "shorter than"),
                         (wav_bytes(0.5, 16000, format="AIFF"), "AIFF is not one of"),
                         (png_bytes(), "not readable audio")):
        with pytest.raises(ValueError, match=phrase):
            media.speech_from_bytes(data, 16000, **LIMITS)
        with pytest.raises(ValueError, match=phrase):
            media.speech_header(data, **LIMITS)


def test_speech_from_bytes_is_what_load_speech_reads_from_the_file(tmp_path):
    for name, data in (("stereo-44k", wav_bytes(1.0, 44100, channels=2)), ("mono-22k", wav_bytes(0.7, 22050)),
                       ("flac-6ch-48k", wav_bytes(0.5, 48000, channels=6, format="FLAC")),
                       ("odd-rate", wav_bytes(0.5, 44101))):
        path = tmp_path / f"{name}.{'flac' if 'flac' in name else 'wav'}"
        path.write_bytes(data)
        assert np.array_equal(media.speech_from_bytes(data, 16000, **LIMITS), media.load_speech(path)), name


def test_a_header_claiming_more_samples_than_there_are_reads_what_there_is():
    data = bytearray(wav_bytes(0.5, 16000))
    at = data.index(b"data") + 4
    data[at:at + 4] = (16000 * 2 * 3600).to_bytes(4, "little")  # an hour of 16-bit samples
    assert len(media.speech_from_bytes(bytes(data), 16000, **LIMITS)) == 8000


def test_the_resampling_filter_stays_small_at_any_rate():
    """resample_poly's filter is 20 x max(up, down) + 1 taps; the exact ratio of an odd rate would
    make it hundreds of thousands long. Standard rates keep their exact ratio."""
    for rate in (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000):
        up, down = media.resample_ratio(rate, 16000)
        assert up * rate == down * 16000, rate
    for rate in (8001, 11111, 44101, 47999, 96001, 191999):
        up, down = media.resample_ratio(rate, 16000)
        assert max(up, down) <= media.MAX_RESAMPLE_TERM, rate
        assert abs(up / down - 16000 / rate) < 1e-4 * 16000 / rate, rate
    with pytest.raises(ValueError, match="ratio beyond"):
        media.resample_ratio(400_000_001, 16000)


def test_pose_video_is_decoded_to_the_pipelines_frames_holding_only_those(tmp_path):
    """The frames the pipeline would make of `read_video` (resize_and_crop each, the first `keep`),
    decoded one at a time; a video shorter than `keep` gives what it has."""
    data = mp4_bytes(12, 240, 320)
    path = tmp_path / "pose.mp4"
    path.write_bytes(data)
    expected = np.stack([media.resize_and_crop(frame, (32, 48)) for frame in media.read_video(path)[0]])
    frames = media.video_from_bytes(data, (32, 48), 5, 2048 * 2048, 1500)
    assert frames.shape == (5, 32, 48, 3) and np.array_equal(frames, expected[:5])
    assert np.array_equal(media.video_from_bytes(data, (32, 48), 81, 2048 * 2048, 1500), expected)


def test_pose_videos_are_refused_from_their_headers():
    for data, limits, phrase in ((png_bytes(), (2048 * 2048, 1500), "not a readable mp4"),
                                 (b"\0" * 64, (2048 * 2048, 1500), "not a readable mp4"),
                                 (mp4_bytes(3, 64, 64), (63 * 63, 1500), "declares 64x64"),
                                 (mp4_bytes(30, 16, 16), (2048 * 2048, 29), "declares 30 frames")):
        with pytest.raises(ValueError, match=phrase):
            media.video_header(data, *limits)
        with pytest.raises(ValueError, match=phrase):
            media.video_from_bytes(data, (16, 16), 5, *limits)


def test_images_are_refused_from_their_headers():
    assert media.image_header(png_bytes(20, 30), 600) == (20, 30)
    with pytest.raises(ValueError, match="30x20 is more than 599 pixels"):
        media.image_from_bytes(png_bytes(20, 30), 599)
    with pytest.raises(ValueError, match="not a PNG or JPEG"):
        media.image_header(wav_bytes(), 600)
