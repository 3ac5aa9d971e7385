"""A small music library generated from one synthetic signal, in every container a real library
holds: WAV, FLAC, MP3, OGG Vorbis, Opus, M4A (AAC and ALAC), WMA, WebM and an MP4 with a video
track. soundfile writes what libsndfile encodes; PyAV (FFmpeg in its wheel) the rest, so no
system ffmpeg is needed. Used by the decoding and tag tests and by benchmarks/bench_decoders.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import soundfile as sf

RATE = 44100
#: name -> (extension, codec, container format); codec None: written by soundfile.
FORMATS = {
    "wav": (".wav", None, "WAV"),
    "flac": (".flac", None, "FLAC"),
    "mp3": (".mp3", "libmp3lame", "mp3"),  # libsndfile's own encoder: correlation 0.62 with its source, LAME 0.99999
    "vorbis": (".ogg", None, "OGG"),
    "opus": (".opus", "libopus", "ogg"),
    "aac": (".m4a", "aac", "ipod"),
    "alac": (".m4a", "alac", "ipod"),
    "wma": (".wma", "wmav2", "asf"),
    "webm": (".webm", "libopus", "webm"),
    "video": (".mp4", "aac", "mp4"),
}
LOSSLESS = ("wav", "flac", "alac")


def signal(seconds: float = 3.0, sr: int = RATE, channels: int = 2) -> np.ndarray:
    """A stereo test signal: three partials, a decaying noise burst every half second, the
    channels different (so a downmix is tested). Values of a fixed function of time, so every
    rate gives the same sound.

    Returns
    -------
    np.ndarray, shape (n_samples, channels), int16
    """
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    burst = np.exp(-(t % 0.5) / 0.03) * np.interp(t, np.linspace(0, seconds, 4096), rng.uniform(-1, 1, 4096))
    cols = [0.3 * np.sin(2 * np.pi * (220 * (c + 1)) * t) + 0.15 * np.sin(2 * np.pi * 1320 * t) + 0.2 * burst
            for c in range(channels)]
    return np.round(np.stack(cols, axis=1) * 32767).astype(np.int16)


def write_with_pyav(path: Path, pcm: np.ndarray, sr: int, codec: str, container: str, video: bool = False) -> None:
    """Encode (n, channels) int16 PCM with PyAV; ``video`` adds a small black video track first."""
    import av

    layout = {1: "mono", 2: "stereo"}[pcm.shape[1]]
    with av.open(str(path), "w", format=container) as out:
        if video:
            vstream = out.add_stream("mpeg4", rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 64, "yuv420p"
        astream = out.add_stream(codec, rate=sr, layout=layout)
        if codec != "alac":
            astream.bit_rate = 128000  # wmav2 refuses to open without one
        planar = np.ascontiguousarray(pcm.T)
        step = 4096
        for start in range(0, pcm.shape[0], step):
            frame = av.AudioFrame.from_ndarray(planar[:, start:start + step], format="s16p", layout=layout)
            frame.sample_rate, frame.pts = sr, start
            out.mux(astream.encode(frame))
        out.mux(astream.encode(None))
        if video:
            for i in range(int(pcm.shape[0] / sr * 10)):
                picture = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
                picture.pts = i
                out.mux(vstream.encode(picture))
            out.mux(vstream.encode(None))


def make_library(folder: Path, seconds: float = 3.0, formats=tuple(FORMATS), pcm=None) -> Dict[str, Path]:
    """Write one sound once per format into ``folder``; return {format name: path}.

    ``pcm(seconds, sr)`` gives the sound as (n, channels) int16 at ``sr`` (default :func:`signal`).
    """
    pcm = pcm or signal
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in formats:
        ext, codec, container = FORMATS[name]
        path = folder / f"{name}{ext}"
        sr = 48000 if codec == "libopus" else RATE  # Opus runs at 48 kHz only
        samples = pcm(seconds, sr)
        if codec is None:
            sf.write(path, samples, sr, format=container, **({"subtype": "PCM_16"} if name == "wav" else {}))
        else:
            write_with_pyav(path, samples, sr, codec, container, video=name == "video")
        paths[name] = path
    return paths
