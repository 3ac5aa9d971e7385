"""Decoders compared on the same songs in one run, and the peak memory of a 2-hour file.

    .venv/bin/python benchmarks/bench_decoders.py              # shared GTZAN WAVs + emotify MP3s
    .venv/bin/python benchmarks/bench_decoders.py --songs 10 --hours 2

1. Songs per minute of ``decoding.decode_audio(path, 22050)`` (decode, mono, soxr HQ to 22,050 Hz:
   what the tagger and training do per song) with soundfile and with PyAV, on the same files,
   interleaved file by file so that machine load hits both alike. The files are the shared GTZAN
   WAVs and emotify MP3s where ``../shared/data`` has them (30-s clips), generated 30-s songs
   otherwise; plus AAC (M4A) transcodes of the WAVs, which only PyAV reads.
2. Peak memory of decoding a generated 2-hour stereo 44.1 kHz WAV (1.27 GB on disk), measured in a
   child process as its peak RSS above its RSS just before decoding (imports done): the whole song
   (``decode_audio``: the result is 2 h x 22,050 Hz x 4 B = 635 MB) and the stream
   (``iter_audio``, blocks dropped as they come), each with both decoders.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import decoding as D  # noqa: E402
from audio_library import signal, write_with_pyav  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SR = 22050


def song_sets(n: int, scratch: Path) -> dict:
    """{label: [paths]}: shared WAVs and MP3s (generated when absent) and M4A transcodes of the WAVs."""
    wavs = sorted((DATA / "gtzan-mini-dev").rglob("*.wav"))[:n]
    mp3s = sorted((DATA / "emotify-dev").rglob("*.mp3"))[:n]
    if not wavs or not mp3s:
        print("../shared/data absent: generated 30-s songs")
        wavs, mp3s = [], []
        for i in range(n):
            pcm = signal(30.0, 44100)
            wavs.append(scratch / f"song{i}.wav")
            sf.write(wavs[-1], pcm, 44100)
            mp3s.append(scratch / f"song{i}.mp3")
            write_with_pyav(mp3s[-1], pcm, 44100, "libmp3lame", "mp3")
    m4as = []
    for wav in wavs:
        pcm, rate = sf.read(wav, dtype="int16", always_2d=True)
        m4as.append(scratch / f"{wav.stem}.m4a")
        write_with_pyav(m4as[-1], pcm, rate, "aac", "ipod")
    return {"WAV": wavs, "MP3": mp3s, "M4A": m4as}


def songs_per_minute(paths, decoders) -> dict:
    """{decoder: songs/min}, each file decoded by every decoder in turn (one warm-up first)."""
    for decoder in decoders:
        D.decode_audio(paths[0], SR, decoder=decoder)
    spent = dict.fromkeys(decoders, 0.0)
    for path in paths:
        for decoder in decoders:
            start = time.perf_counter()
            D.decode_audio(path, SR, decoder=decoder)
            spent[decoder] += time.perf_counter() - start
    return {decoder: 60.0 * len(paths) / seconds for decoder, seconds in spent.items()}


def write_long_wav(path: Path, hours: float) -> None:
    """A stereo 44.1 kHz 16-bit WAV of ``hours``, written a minute at a time."""
    minute = signal(60.0, 44100)
    with sf.SoundFile(path, "w", samplerate=44100, channels=2, subtype="PCM_16") as fh:
        for _ in range(int(hours * 60)):
            fh.write(minute)


def _rss_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (the peak so far) of this process, in KiB (Linux)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def _child(path: str, how: str, decoder: str) -> None:
    """Run in a child: print the peak RSS above the RSS just before decoding, in MB."""
    if how != "predict_audio":
        D.iter_audio(path, SR, decoder=decoder)  # imports the decoder's modules: part of the baseline
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS, so the peak is the decoding's
    if how == "predict_audio":  # the whole song path: decode, windows, features, model (decoder: a model folder)
        from transformers import AutoModel

        model = AutoModel.from_pretrained(decoder, trust_remote_code=True)
        noise = np.random.default_rng(0).uniform(-0.3, 0.3, 10 * SR).astype(np.float32)
        model.predict_audio(noise, sampling_rate=SR)  # first-call imports and compiled kernels: baseline
        before = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        n = model.predict_audio(path)["num_windows"]
    elif how == "whole":
        n = len(D.decode_audio(path, SR, decoder=decoder))
    else:
        n = sum(len(block) for block in D.iter_audio(path, SR, decoder=decoder))
    print(f"{(_rss_kib('VmHWM') - before) * 1024 / 1e6:.0f} {n}")


def peak_memory(path: Path, how: str, decoder: str) -> tuple:
    done = subprocess.run([sys.executable, __file__, "--child", str(path), how, decoder], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{how} {decoder}: the child failed:\n{done.stderr[-2000:]}")
    out = done.stdout.split()[-2:]
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=20, help="songs per format (default 20)")
    parser.add_argument("--hours", type=float, default=2.0, help="length of the long file (default 2)")
    parser.add_argument("--model", help="also measure model.predict_audio on the long file (a save_pretrained "
                        "folder, e.g. runs/latest/hf_model)")
    parser.add_argument("--skip-speed", action="store_true", help="memory only")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench_decoders_") as scratch:
        scratch = Path(scratch)
        for label, paths in ({} if args.skip_speed else song_sets(args.songs, scratch)).items():
            decoders = ("av",) if label == "M4A" else ("soundfile", "av")
            rates = songs_per_minute(paths, decoders)
            line = ", ".join(f"{d} {r:.0f} songs/min" for d, r in rates.items())
            ratio = f"  (soundfile / PyAV = {rates['soundfile'] / rates['av']:.2f}x)" if len(rates) == 2 else ""
            seconds = np.mean([sf.info(p).duration if label != "M4A" else 30.0 for p in paths])
            print(f"{label:4s} {len(paths)} songs of ~{seconds:.0f} s: {line}{ratio}")
        long_wav = scratch / "mix.wav"
        write_long_wav(long_wav, args.hours)
        print(f"{args.hours:g}-hour stereo 44.1 kHz WAV ({long_wav.stat().st_size / 1e9:.2f} GB): peak RSS above baseline")
        for how in ("whole", "stream"):
            for decoder in ("soundfile", "av"):
                mb, n = peak_memory(long_wav, how, decoder)
                result = f"result {n * 4 / 1e6:.0f} MB" if how == "whole" else "blocks dropped"
                print(f"  {how:6s} {decoder:9s}: {mb:5.0f} MB ({result})")
        if args.model:
            mb, n = peak_memory(long_wav, "predict_audio", str(Path(args.model).resolve()))
            print(f"  model.predict_audio: {mb:5.0f} MB ({n} windows)")


if __name__ == "__main__":
    main()
