"""batch_features: the streaming API, the cache's robustness, and the crashes and hangs of issue 12
(implausible sample rates, unreadable cache entries, FIFOs and devices, workers outliving a killed
parent, cache keys of files and arrays, non-audio files renamed to audio names)."""

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from workbench import batch as B
import features as F
from workbench import synth

SR = F.SAMPLE_RATE
ROOT = Path(__file__).resolve().parents[1]


def clip(genre="jazz", seed=0, seconds=1.5):
    return synth.generate_clip(genre, np.random.default_rng(seed), duration=seconds)


def write_clips(folder, n=3, seconds=1.5):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"clip{i}.wav"
        sf.write(p, clip(list(synth.GENRE_GENERATORS)[i % 5], i, seconds), SR)
        paths.append(p)
    return paths


def png_bytes(w=32, h=32):
    raw = b"".join(b"\x00" + bytes((x * 7 + y) % 256 for x in range(w * 3)) for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def run_python(code, timeout=120):
    """Run ``code`` in a fresh interpreter in the repo root; a hang fails the test, never blocks it."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------------------- sample rates


def test_wav_header_with_1_hz_is_refused_before_resampling(tmp_path):
    path = tmp_path / "one_hz.wav"
    sf.write(path, (0.5 * np.sin(np.arange(220_500) / 10)).astype(np.float32), 8000)
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", 1)  # fmt chunk: sample rate 1 Hz ...
    data[28:32] = struct.pack("<I", 4)  # ... and byte rate to match
    path.write_bytes(bytes(data))
    # Run in a child: before the fix this asked soxr for ~4.9 billion samples and segfaulted.
    out = run_python(f"""
        import features as F
        try:
            F.load_audio({str(path)!r})
        except F.AudioError as exc:
            print("ERR", exc)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"ERR {path}: implausible sample rate 1 Hz" in out.stdout
    res = B.extract_many([path], n_jobs=1, cache_dir=tmp_path / "cache", progress=False)
    assert res.ok == [] and "implausible sample rate 1 Hz" in res.failures[0][1] and str(path) in res.failures[0][1]


@pytest.mark.parametrize("orig_sr", [1, 999, 768_001, 10**9])
def test_resample_refuses_implausible_rates(orig_sr):
    with pytest.raises(F.AudioError, match=f"array: implausible sample rate {orig_sr} Hz"):
        F.resample_audio(np.zeros(4410, np.float32), orig_sr, SR)
    with pytest.raises(F.AudioError, match="implausible target sample rate"):
        F.resample_audio(np.zeros(4410, np.float32), SR, orig_sr)


def test_resample_output_size_is_bounded(monkeypatch):
    monkeypatch.setattr(F, "MAX_AUDIO_SECONDS", 1)
    y = np.zeros(16000 * 2, np.float32)  # 2 s: over the (patched) 1-s limit at any target rate
    with pytest.raises(F.AudioError, match=r"song.flac: resampling 32000 samples .* more than the"):
        F.resample_audio(y, 16000, SR, source="song.flac")
    assert len(F.resample_audio(y[:8000], 16000, SR)) == SR // 2  # within the limit: works


# ------------------------------------------------------------------------------------ cache


def _corrupt(entry: Path, how: str):
    good = entry.read_bytes()
    if how == "empty":
        entry.write_bytes(b"")
    elif how == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif how == "bad_header":
        entry.write_bytes(b"\x93NUMPY garbage" + good[20:])
    elif how == "wrong_shape":
        with open(entry, "wb") as fh:
            np.savez(fh, features=np.ones((2, 7), np.float32), starts=np.zeros(2, np.int64))
    elif how == "npy":
        with open(entry, "wb") as fh:
            np.save(fh, np.ones((1, 59), np.float32))
    elif how == "nan":
        with open(entry, "wb") as fh:
            np.savez(fh, features=np.full((1, 59), np.nan, np.float32), starts=np.zeros(1, np.int64))
    elif how == "pickled":
        with open(entry, "wb") as fh:
            np.savez(fh, features=np.array([object()], dtype=object), starts=np.zeros(1, np.int64))


@pytest.mark.parametrize("how", ["empty", "truncated", "bad_header", "wrong_shape", "npy", "nan", "pickled"])
def test_unreadable_cache_entry_is_recomputed_and_rewritten(tmp_path, how):
    paths = write_clips(tmp_path / "audio", n=2)
    cache = tmp_path / "cache"
    first = B.extract_many(paths, n_jobs=1, cache_dir=cache, progress=False)
    entries = sorted(cache.rglob("*.npz"))
    assert len(first.ok) == 2 and len(entries) == 2
    for entry in entries:
        _corrupt(entry, how)
    second = B.extract_many(paths, n_jobs=1, cache_dir=cache, progress=False)
    assert second.ok == [0, 1] and second.failures == [] and second.cache_hits == 0
    for a, b in zip(first.features, second.features):
        np.testing.assert_array_equal(a, b)
    third = B.extract_many(paths, n_jobs=1, cache_dir=cache, progress=False)  # rewritten: hits again
    assert third.cache_hits == 2
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".npz"]  # no temp files left


def test_file_bytes_mimicking_array_key_material_do_not_hit_its_entry(tmp_path):
    arr = clip("rock", 3)
    cache = tmp_path / "cache"
    assert B.extract_many([arr], n_jobs=1, cache_dir=cache).ok == [0]
    # The seed hashed an array as b"array:<dtype>:<shape>" + its bytes and a file as its bytes:
    # a file holding exactly that material got the array's features. Try both that material and
    # the current array header.
    for i, prefix in enumerate([f"array:{arr.dtype.str}:{arr.shape}", f"{arr.dtype.str}:{arr.shape}:"]):
        crafted = tmp_path / f"crafted{i}.wav"
        crafted.write_bytes(prefix.encode() + arr.tobytes())
        res = B.extract_many([crafted], n_jobs=1, cache_dir=cache)
        assert res.cache_hits == 0 and res.ok == [], res
        assert res.failures[0][0] == str(crafted) and "not an audio file" in res.failures[0][1]


def test_cache_settings_is_the_one_key_source():
    base = B.cache_settings(SR, 5.0, 2048, 512)
    assert base == B.cache_settings(SR, 5, 2048, 512)  # 5 and 5.0 are one setting
    others = [B.cache_settings(16000, 5.0, 2048, 512), B.cache_settings(SR, None, 2048, 512),
              B.cache_settings(SR, 5.0, 1024, 512), B.cache_settings(SR, 5.0, 2048, 256),
              B.cache_settings(SR, 5.0, 2048, 512, "MusiCNN:abc")]
    assert len({base, *others}) == 6
    assert F.FEATURE_VERSION in base and B.CACHE_FORMAT in base


# ------------------------------------------------------------------------ non-regular files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_fifo_and_dev_zero_fail_fast_with_the_cache_on(tmp_path, n_jobs):
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    zero_link = tmp_path / "zero.mp3"
    zero_link.symlink_to("/dev/zero")
    good = write_clips(tmp_path / "audio", n=1)[0]
    # In a child with a timeout: before the fix, hashing the FIFO blocked forever (and /dev/zero
    # never ended).
    out = run_python(f"""
        from workbench import batch as B
        res = B.extract_many([{str(fifo)!r}, "/dev/zero", {str(zero_link)!r}, {str(good)!r}, {str(tmp_path)!r}],
                             n_jobs={n_jobs}, cache_dir={str(tmp_path / "cache")!r}, progress=False)
        print("OK", res.ok)
        for name, msg in res.failures:
            print("FAIL", msg)
    """, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK [3]" in out.stdout
    fails = [line[5:] for line in out.stdout.splitlines() if line.startswith("FAIL ")]
    assert fails == [f"{fifo}: not a regular file (a FIFO (named pipe))",
                     "/dev/zero: not a regular file (a character device)",
                     f"{zero_link}: not a regular file (a character device)",
                     f"{tmp_path}: not a regular file (a directory)"]


# -------------------------------------------------------------------------- dying with parent


def _children(pid):
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid):
    """Running (not a zombie waiting for a reaper that may never come in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        from workbench import batch as B

        def slow(*args, **kwargs):  # a slow input: each source takes minutes
            time.sleep(600)

        B._extract_source = slow  # forked workers inherit the patched module
        # n_jobs=3: this process and two child processes
        B.extract_many([np.ones(22050, np.float32) * 0.1] * 6, n_jobs=3, cache_dir=False, progress=False)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.2)
            workers = [pid for pid in _children(parent.pid) if _alive(pid)]
        assert len(workers) >= 2, f"pool workers never appeared (children: {_children(parent.pid)})"
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        survivors = [pid for pid in workers if _alive(pid)]
        assert not survivors, f"workers {survivors} outlived their SIGKILLed parent"
    finally:
        for pid in _children(parent.pid) + ([parent.pid] if parent.poll() is None else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers inherit a patched module")
def test_a_song_that_kills_its_worker_fails_alone_and_the_batch_goes_on(tmp_path, monkeypatch):
    # A decoder crashing on a file, or the out-of-memory killer, ends a worker process and breaks
    # the whole pool: every song in flight there is lost with it. Those songs are run again one by
    # one, so the song that kills its worker gets an error line and every other song its row.
    paths = []
    for i in range(12):
        p = tmp_path / f"{'deadly' if i % 3 == 1 else 'song'}_{i:02d}.wav"
        sf.write(p, 0.1 * np.sin(np.arange(3 * 22050) * (0.01 + 0.002 * i)).astype(np.float32), 22050)
        paths.append(p)
    parent, extract = os.getpid(), B._extract_source

    def crash_in_a_worker(source, *args):
        if "deadly" in str(source) and os.getpid() != parent:
            os._exit(1)  # what a segfault or SIGKILL does: no exception, no cleanup
        return extract(source, *args)

    monkeypatch.setattr(B, "_extract_source", crash_in_a_worker)
    result = B.extract_many(paths, n_jobs=2, cache_dir=False, progress=False)
    failed = dict(result.failures)
    ok = {str(paths[i]) for i in result.ok}
    assert ok | set(failed) == {str(p) for p in paths}
    assert {str(p) for p in paths if "deadly" not in p.name} <= ok  # no innocent song lost
    assert failed, "no deadly song reached a worker: the test did not exercise the crash"
    for path, reason in failed.items():
        assert "deadly" in path and reason.startswith(f"{path}: the worker process reading it died")
    alone = B.extract_many([p for p in paths if str(p) in ok], n_jobs=1, cache_dir=False, progress=False)
    for got, want in zip(result.features, alone.features):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------- non-audio, renamed


def test_png_renamed_mp3_is_not_an_audio_file(tmp_path, capfd):
    path = tmp_path / "cover.mp3"
    path.write_bytes(png_bytes())
    with pytest.raises(F.AudioError) as err:
        F.load_audio(path)
    assert str(err.value) == f"{path}: not an audio file (PNG image)"
    res = B.extract_many([path], n_jobs=1, cache_dir=tmp_path / "cache")
    assert res.failures == [(str(path), f"{path}: not an audio file (PNG image)")]
    assert "does not exist" not in capfd.readouterr().err


@pytest.mark.parametrize("content, problem", [
    (b"this is not audio\n" * 200, "not an audio file (unrecognised content"),
    (b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 20, "cannot decode audio"),
    (b"\xff\xfb\x90\x00" + b"\x55" * 5000, "cannot decode audio"),
])
def test_undecodable_mp3_is_one_line_and_decoder_notes_stay_off_stderr(tmp_path, capfd, content, problem):
    path = tmp_path / "song.mp3"
    path.write_bytes(content)
    with pytest.raises(F.AudioError) as err:
        F.load_audio(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {problem}") and "\n" not in msg and "does not exist" not in msg
    err_text = capfd.readouterr().err
    assert "Note:" not in err_text and "libmpg123" not in err_text, err_text
    # other stderr output written while the decoder runs is kept
    os.write(2, b"")
    with F._quiet_decoder():
        os.write(2, b"Note: decoder chatter\nkept line\n")
    assert capfd.readouterr().err == "kept line\n"


# ------------------------------------------------------------------------------- streaming


def test_iter_extract_streams_everything_once_from_a_generator(tmp_path):
    paths = write_clips(tmp_path / "audio", n=4)
    sources = [paths[0], tmp_path / "missing.wav", paths[1], clip("pop", 9), paths[2], paths[3]]
    pulled = []

    def lazily():
        for s in sources:
            pulled.append(s)
            yield s

    stream = B.iter_extract(lazily(), n_jobs=2, cache_dir=False)
    first = next(stream)
    assert len(pulled) <= 2 * 2 + 1  # bounded read-ahead: in-flight sources, not the whole library
    items = [first] + list(stream)
    assert sorted(it.index for it in items) == list(range(6))
    assert all(it.pending is None for it in items)  # the front end (none here) is never left to the caller
    by_index = {it.index: (None if it.song is None else it.song.features, it.error) for it in items}
    assert by_index[1][0] is None and by_index[1][1] == f"{tmp_path / 'missing.wav'}: file not found"
    ref = B.extract_many(sources, n_jobs=1, cache_dir=False)
    for i, feats in zip(ref.ok, ref.features):
        assert by_index[i][1] is None
        np.testing.assert_allclose(by_index[i][0], feats, rtol=1e-6)


def test_iter_extract_starts_and_early_stop(tmp_path):
    song = clip("rock", 4, seconds=4.6)
    (item,) = list(B.iter_extract([song], clip_seconds=2.0, n_jobs=1, cache_dir=False))
    assert item.index == 0 and item.error is None and item.song.features.shape == (2, 59)
    assert item.song.starts.tolist() == [0, 2 * SR] and item.song.duration == pytest.approx(4.6, abs=1e-4)
    # Stopping early shuts the pool down: its workers are gone once the generator is closed.
    stream = B.iter_extract([clip("jazz", i) for i in range(8)], n_jobs=2, cache_dir=False)
    next(stream)
    stream.close()
    if sys.platform.startswith("linux"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [p for p in _children(os.getpid()) if _alive(p)]:
            time.sleep(0.1)
        assert not [p for p in _children(os.getpid()) if _alive(p)]


def test_extract_many_counts_hits_and_keeps_failures_in_order(tmp_path):
    paths = write_clips(tmp_path / "audio", n=3)
    bad = tmp_path / "cover.mp3"
    bad.write_bytes(png_bytes())
    sources = [paths[0], bad, paths[1], paths[2]]
    cache = tmp_path / "cache"
    cold = B.extract_many(sources, n_jobs=2, cache_dir=cache, progress=False)
    warm = B.extract_many(sources, n_jobs=2, cache_dir=cache, progress=False)
    assert cold.ok == warm.ok == [0, 2, 3] and cold.cache_hits == 0 and warm.cache_hits == 3
    assert [name for name, _ in warm.failures] == [str(bad)]
    for a, b in zip(cold.features, warm.features):
        np.testing.assert_array_equal(a, b)
