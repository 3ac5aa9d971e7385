"""Audio files to mono float32 at a target rate: which files count as audio, and how they decode.

Two decoders share the work, each where it is the better one:

- soundfile (libsndfile) for what it reads: WAV, FLAC, OGG Vorbis, Opus, MP3, AU, AIFF, CAF, W64.
  Measured on the same files in one run (``benchmarks/bench_decoders.py``), it decodes these
  faster than PyAV does.
- PyAV (the ``av`` package: FFmpeg's libraries inside its wheel, no system ffmpeg) for everything
  else: M4A/MP4 with AAC or ALAC, WMA/ASF, the sound of MP4, WebM and Matroska videos, AC-3,
  Monkey's Audio, WavPack, and files whose container libsndfile knows but whose codec it does not
  (a WAV holding MP3 data). ``av`` is optional: reading such a file without it raises
  :class:`MissingDecoderError`, which names the package.

Every file is decoded as a stream of blocks: each block is averaged to mono at the file's rate,
then resampled with soxr (``HQ``, the same filter and the same samples as
``librosa.resample(res_type="soxr_hq")``; a stream gives bit for bit the one-shot result). Memory is
bounded by the duration at the target rate, not by the file's channels times rate: an 8-channel
192 kHz file costs what a mono one does, plus one block. :func:`iter_audio` yields the blocks
themselves, so a caller that cuts windows keeps only the window it is working on.

Only numpy is needed to import this module; soundfile, soxr and av are imported inside ``try:``
(the Hub's dynamic-module loader refuses a module whose top-level imports are missing).
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np

try:
    import soundfile
except ImportError:  # pragma: no cover - exercised only without the audio extras
    soundfile = None
try:
    import soxr  # librosa's resampler; it comes with librosa
except ImportError:  # pragma: no cover
    soxr = None

__all__ = [
    "AUDIO_EXTENSIONS", "SOUNDFILE_EXTENSIONS", "AudioError", "MissingDecoderError", "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE", "MAX_AUDIO_SECONDS", "is_audio_file", "decoder_for", "iter_audio", "decode_audio",
]

#: Extensions libsndfile decodes (and decodes faster than PyAV, measured): these go to soundfile.
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".snd", ".aiff", ".aif",
                        ".aifc", ".caf", ".w64", ".rf64")
#: Extensions that go to PyAV: what phones, iTunes, Windows Media and video files hold.
PYAV_EXTENSIONS = (".m4a", ".m4b", ".m4p", ".mp4", ".m4v", ".mov", ".3gp", ".aac", ".alac", ".wma", ".asf",
                   ".webm", ".mka", ".mkv", ".ac3", ".eac3", ".dts", ".mp2", ".mpc", ".ape", ".wv", ".tta",
                   ".amr", ".spx")
#: The one list of what a folder search picks up (lower case, with the dot). A file named
#: explicitly is tried whatever its extension.
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + PYAV_EXTENSIONS

#: Plausible sample rates (Hz) of a file or an array to resample: outside, the header is corrupt.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000
#: Longest audio a decode may produce (seconds at the target rate): 2 hours, 635 MB of float32
#: at 22,050 Hz. A bound on the work before allocating, not a limit on songs.
MAX_AUDIO_SECONDS = 2 * 3600
#: Frames read per block from soundfile: 64 Ki frames, 2 MiB for 8 float32 channels.
BLOCK_FRAMES = 1 << 16

Source = Union[str, os.PathLike, bytes, io.IOBase]


class AudioError(ValueError):
    """Audio that cannot be turned into features: missing, unreadable, empty, silent, too short or
    non-finite. The message names the source (a file path, or ``"array"``) and the problem."""


class MissingDecoderError(AudioError, ImportError):
    """A file that needs an optional decoder package which is not installed (``av``). It is an
    :class:`AudioError` (a library run lists the file and goes on) and an :class:`ImportError`."""


# --------------------------------------------------------------------------------------------
# Checks shared with features.py
# --------------------------------------------------------------------------------------------


def _check_rates(orig_sr: int, target_sr: int, source: str, where: str = "") -> None:
    for name, rate in (("sample rate", orig_sr), ("target sample rate", target_sr)):
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            place = f" {where}" if where and name == "sample rate" else ""
            raise AudioError(f"{source}: implausible {name} {rate} Hz{place} (expected {MIN_SAMPLE_RATE}-"
                             f"{MAX_SAMPLE_RATE} Hz)")


def _check_output_size(n_samples: int, orig_sr: int, target_sr: int, source: str,
                       limit_seconds: float = MAX_AUDIO_SECONDS) -> None:
    n_out = -(-int(n_samples) * int(target_sr) // int(orig_sr))  # ceil, in exact integers
    if n_out > limit_seconds * target_sr:
        raise AudioError(f"{source}: resampling {n_samples} samples from {orig_sr} Hz to {target_sr} Hz would give "
                         f"{n_out / target_sr / 3600:.1f} h of audio, more than the {limit_seconds / 3600:g} h "
                         "limit")


# --------------------------------------------------------------------------------------------
# What a file is
# --------------------------------------------------------------------------------------------

#: Leading bytes of common non-audio files -> what they are (checked before decoding).
_NON_AUDIO_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"), (b"\xff\xd8\xff", "JPEG image"), (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"), (b"%PDF", "PDF document"), (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip archive"), (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"), (b"Rar!", "RAR archive"),
    (b"\x7fELF", "executable"), (b"BM", "BMP image"), (b"II*\x00", "TIFF image"), (b"MM\x00*", "TIFF image"),
    (b"<?xml", "XML text"), (b"<!DOCTYPE", "HTML text"), (b"<html", "HTML text"), (b"{\\rtf", "RTF text"),
)
#: ISO-media brands of still images (HEIF, AVIF): an ``ftyp`` box that holds no sound.
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")
#: Leading bytes of audio containers libsndfile reads (MP3: ID3 tag or an MPEG frame sync).
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b".snd", b"caff", b"MThd")
#: Containers libsndfile knows but whose codec may be one it lacks (then PyAV is tried).
_PYAV_FALLBACK_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"FORM", b"caff", b"OggS")
#: Leading bytes of what only FFmpeg reads: Matroska/WebM, ASF/WMA, Monkey's Audio, WavPack, AMR,
#: Musepack, AC-3 (ISO media is recognised by its ``ftyp`` box at offset 4).
_PYAV_MAGIC = (b"\x1a\x45\xdf\xa3", b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", b"MAC ", b"wvpk", b"#!AMR", b"MPCK",
               b"\x0b\x77")


def _non_audio_kind(head: bytes) -> Optional[str]:
    for magic, kind in _NON_AUDIO_MAGIC:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS:
        return "ISO media image (HEIF/AVIF)"
    return None


def _looks_like_audio(head: bytes) -> bool:
    return head.startswith(_AUDIO_MAGIC) or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


def is_audio_file(path: Union[str, os.PathLike]) -> bool:
    """Whether a folder search should pick ``path`` up: a visible file with one of
    :data:`AUDIO_EXTENSIONS` (any case)."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS


def decoder_for(name: str, head: bytes) -> str:
    """``"soundfile"`` or ``"av"``: which decoder reads a file, from its name and leading bytes.

    The content decides where it is unambiguous (an ``ftyp`` box, a Matroska or ASF header go to
    PyAV whatever the file is called); otherwise the extension does, and anything unknown goes to
    soundfile (whose errors say what the content looks like).
    """
    if head[4:8] == b"ftyp" or head.startswith(_PYAV_MAGIC):
        return "av"
    if Path(name).suffix.lower() in PYAV_EXTENSIONS and not head.startswith(_AUDIO_MAGIC):
        return "av"
    return "soundfile"


def _decode_error(source: str, head: bytes, exc: Exception) -> str:
    """One line for a file a decoder refused. libsndfile's message for content it cannot identify
    is "File does not exist or is not a regular file" (for an existing file), so that case is
    reported by what the content is instead."""
    detail = str(exc).split(":", 2)[-1].strip() if "Error opening" in str(exc) else str(exc)
    if getattr(exc, "strerror", None) and getattr(exc, "errno", None) is not None:  # PyAV: no path again
        detail = exc.strerror
    if not head:
        return f"{source}: audio is empty (0-byte file)"
    if not _looks_like_audio(head) and not head[4:8] == b"ftyp" and not head.startswith(_PYAV_MAGIC):
        shown = head[:8].hex(" ")
        return f"{source}: not an audio file (unrecognised content, first bytes {shown})"
    if "does not exist" in detail:
        detail = "no decodable audio stream"
    return f"{source}: cannot decode audio ({type(exc).__name__}: {detail})"


# --------------------------------------------------------------------------------------------
# Decoder notes off stderr
# --------------------------------------------------------------------------------------------

_STDERR_LOCK = threading.Lock()
_STDERR_STATE: Dict[str, object] = {"depth": 0, "saved": None, "capture": None}
#: What libmpg123 and libsndfile print on stderr while probing bad data.
_DECODER_NOTE_PREFIXES = (b"Note:", b"Warning:", b"[src/", b"[../src", b"Error:")


@contextmanager
def _quiet_decoder():
    """Keep the decoders' notes ("Note: Illegal Audio-MPEG-Header ...") off stderr.

    libmpg123 writes to file descriptor 2 from C, out of Python's reach, so fd 2 is pointed at a
    temporary file while files are opened and read (reference-counted: threads decoding at the
    same time share one redirection); afterwards the captured lines that are not decoder notes
    (another thread's output) are written back to stderr, so nothing else is lost.
    """
    with _STDERR_LOCK:
        if _STDERR_STATE["depth"] == 0:
            try:
                sys.stderr.flush()  # Python's buffered text must land before fd 2 moves
            except Exception:
                pass
            try:
                saved = os.dup(2)
            except OSError:  # no stderr at all: nothing to protect
                saved = None
            if saved is not None:
                capture = tempfile.TemporaryFile()
                os.dup2(capture.fileno(), 2)
                _STDERR_STATE.update(saved=saved, capture=capture)
        _STDERR_STATE["depth"] += 1
    try:
        yield
    finally:
        with _STDERR_LOCK:
            _STDERR_STATE["depth"] -= 1
            saved, capture = _STDERR_STATE["saved"], _STDERR_STATE["capture"]
            if _STDERR_STATE["depth"] == 0 and saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
                _STDERR_STATE.update(saved=None, capture=None)
                try:
                    capture.seek(0)
                    kept = [line for line in capture.read().splitlines(keepends=True)
                            if not line.lstrip().startswith(_DECODER_NOTE_PREFIXES)]
                    if kept:
                        os.write(2, b"".join(kept))
                finally:
                    capture.close()


# --------------------------------------------------------------------------------------------
# Native-rate mono blocks from each decoder
# --------------------------------------------------------------------------------------------


def _import_av(source: str):
    """The ``av`` module, or a one-line error naming the package (it is optional)."""
    try:
        import av
    except ImportError:
        raise MissingDecoderError(
            f"{source}: decoding {Path(source).suffix or 'this file'} needs the `av` package (PyAV: FFmpeg's "
            "libraries in its wheel); install it with `pip install av`") from None
    return av


def _require_soundfile(source: str) -> None:
    missing = [name for name, mod in (("soundfile", soundfile), ("soxr", soxr)) if mod is None]
    if missing:
        raise MissingDecoderError(f"{source}: decoding audio needs {', '.join(missing)}; install them with "
                                  "`pip install 'soundfile>=0.13,<0.15' soxr`")


class _Opened:
    """A decoder opened on one file: its rate, its length when the header says, and its blocks."""

    def __init__(self, rate: int, frames: Optional[int], blocks: Iterator[np.ndarray], close):
        self.rate, self.frames, self.blocks, self.close = rate, frames, blocks, close


def _mono(block: np.ndarray, channel_axis: int) -> np.ndarray:
    """(frames, channels) or (channels, frames) float32 -> (frames,) float32, channels averaged."""
    if block.shape[channel_axis] == 1:
        return np.ascontiguousarray(block[:, 0] if channel_axis == 1 else block[0])
    return block.mean(axis=channel_axis, dtype=np.float32)


def _open_soundfile(file, source: str) -> _Opened:
    fh = soundfile.SoundFile(file)

    def blocks():
        while True:
            data = fh.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(data):
                return
            yield _mono(data, 1)

    return _Opened(int(fh.samplerate), int(fh.frames) if fh.frames > 0 else None, blocks(), fh.close)


#: PyAV sample formats -> (offset, scale) that map them to [-1, 1], as libsndfile does.
_PCM_SCALE = {"u8": (128, 128.0), "s16": (0, 32768.0), "s32": (0, 2.0 ** 31), "s64": (0, 2.0 ** 63),
              "flt": (0, 1.0), "dbl": (0, 1.0)}


def _av_mono(frame) -> np.ndarray:
    """One decoded frame -> (samples,) float32, channels averaged.

    The conversion is done here rather than by ``av.AudioResampler``: PyAV 18's resampler crashes
    (a segmentation fault) on a layout FFmpeg leaves unnamed, such as an 8-channel WAV's, and its
    downmix would weight the channels of a 5.1 file instead of averaging them as soundfile's path
    does.
    """
    fmt = frame.format.name
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # (1, samples * channels), interleaved
        data = data.reshape(-1, channels).T
    offset, scale = _PCM_SCALE[fmt.rstrip("p")]
    if data.dtype != np.float32:
        data = ((data.astype(np.float32) - offset) / scale) if offset or scale != 1.0 else data.astype(np.float32)
    return _mono(data, 0)


def _av_frames_estimate(container, stream, rate: int) -> Optional[int]:
    """Frames at the stream's rate the header promises, or None (a live stream, a bare ADTS file)."""
    if stream.duration and stream.time_base:
        return int(stream.duration * stream.time_base * rate)
    if container.duration:  # microseconds
        return int(container.duration * rate // 1_000_000)
    return None


def _open_av(file, source: str) -> _Opened:
    av = _import_av(source)
    container = av.open(file, mode="r")
    try:
        if not container.streams.audio:
            raise AudioError(f"{source}: no audio stream in the file ({len(container.streams.video)} video)")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
    except BaseException:
        container.close()
        raise
    def blocks():
        # FFmpeg's frames are small (a WAV's: 2,048 samples): joined into blocks of BLOCK_FRAMES,
        # so the per-block work (checks, soxr calls, stderr quieting) is not paid per frame.
        pending, count = [], 0
        for frame in container.decode(stream):
            if frame.sample_rate != rate:
                raise AudioError(f"{source}: sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)")
            pending.append(_av_mono(frame))
            count += len(pending[-1])
            if count >= BLOCK_FRAMES:
                yield np.concatenate(pending)
                pending, count = [], 0
        if pending:
            yield np.concatenate(pending)

    return _Opened(rate, _av_frames_estimate(container, stream, rate), blocks(), container.close)


def _read_head(source: Source, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:16])
    if isinstance(source, io.IOBase):
        pos = source.tell()
        head = source.read(16)
        source.seek(pos)
        return head
    p = Path(source)
    try:  # the errno says why: a missing file, a symlink loop, a folder without permission
        is_file = stat.S_ISREG(os.stat(p).st_mode)
    except FileNotFoundError:
        raise AudioError(f"{name}: file not found") from None
    except OSError as exc:  # as workbench.batch (classify.py) says it
        raise AudioError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if not is_file:
        raise AudioError(f"{name}: not a regular file")
    try:
        with open(p, "rb") as fh:
            return fh.read(16)
    except OSError as exc:
        raise AudioError(f"{name}: cannot read file ({exc.strerror or exc})") from None


def _open(source: Source, name: str, decoder: str) -> _Opened:
    """Open ``source`` with the decoder its name and content call for (``decoder="auto"``)."""
    head = _read_head(source, name)
    kind = _non_audio_kind(head)
    if kind is not None:  # never hand an image or archive to the decoders (misleading errors, noise)
        raise AudioError(f"{name}: not an audio file ({kind})")
    if not head:
        raise AudioError(f"{name}: audio is empty (0-byte file)")
    if decoder == "auto":
        decoder = decoder_for(name, head)
    _require_soundfile(name)

    def file():  # a fresh file object each try: a failed open may have moved the position
        if isinstance(source, (bytes, bytearray, memoryview)):
            return io.BytesIO(bytes(source))
        if isinstance(source, io.IOBase):
            source.seek(0)
            return source
        return os.fspath(source)

    try:
        with _quiet_decoder():
            if decoder == "av":
                return _open_av(file(), name)
            try:
                return _open_soundfile(file(), name)
            except Exception as exc:
                # A WAV or CAF may hold a codec libsndfile lacks (MP3, AAC): FFmpeg may know it.
                if not head.startswith(_PYAV_FALLBACK_MAGIC):
                    raise
                try:
                    return _open_av(file(), name)
                except Exception:
                    raise exc from None
    except AudioError:
        raise
    except Exception as exc:  # libsndfile and FFmpeg raise several types
        raise AudioError(_decode_error(name, head, exc)) from None


# --------------------------------------------------------------------------------------------
# Resampled, checked blocks
# --------------------------------------------------------------------------------------------


def _quietly(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The decoder's blocks, each read with stderr quieted (only while the decoder runs: a
    caller's own output between blocks reaches stderr at once)."""
    while True:
        with _quiet_decoder():
            block = next(blocks, None)
        if block is None:
            return
        yield block


def _resampled(blocks: Iterator[np.ndarray], orig_sr: int, sr: int) -> Iterator[np.ndarray]:
    """Blocks at ``orig_sr`` -> blocks at ``sr`` (soxr HQ), ``ceil(n_in * sr / orig_sr)`` samples in
    all, as ``librosa.resample(..., res_type="soxr_hq")`` gives; one block is held back so that the
    last can be trimmed or padded to that length."""
    if orig_sr == sr:
        yield from blocks
        return
    stream = soxr.ResampleStream(orig_sr, sr, 1, dtype="float32", quality="HQ")
    n_in = n_out = 0
    held = None
    for block in blocks:
        n_in += len(block)
        out = stream.resample_chunk(block)
        if len(out):
            if held is not None:
                yield held
            n_out += len(out)
            held = out
    tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
    want = -(-n_in * sr // orig_sr)
    last = np.concatenate([held, tail]) if held is not None else tail
    n_out += len(tail)
    extra = n_out - want
    if extra > 0:
        last = last[:max(len(last) - extra, 0)]
    elif extra < 0:
        last = np.concatenate([last, np.zeros(-extra, np.float32)])
    if len(last):
        yield last


def _checked(blocks: Iterator[np.ndarray], name: str) -> Iterator[np.ndarray]:
    """Refuse non-finite samples (before resampling: soxr would smear one NaN over many)."""
    for block in blocks:
        if not np.isfinite(block).all():
            raise AudioError(f"{name}: audio contains NaN or infinite samples")
        yield block


def _stream(source: Source, sr: int, max_seconds: Optional[float], decoder: str,
            name: Optional[str]) -> Tuple[Optional[int], Iterator[np.ndarray]]:
    """Open and check ``source``; return (samples at ``sr`` the header promises or None, blocks)."""
    if name is None:
        name = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview, io.IOBase)) else str(source)
    if decoder not in ("auto", "soundfile", "av"):
        raise ValueError(f"decoder must be 'auto', 'soundfile' or 'av', got {decoder!r}")
    opened = _open(source, name, decoder)
    try:
        # Header values are checked before any sample is read or resampled: a header saying 1 Hz
        # would otherwise ask soxr for billions of output samples.
        _check_rates(opened.rate, sr, name, "in the file header")
        if max_seconds is not None and opened.frames:
            _check_output_size(opened.frames, opened.rate, sr, name, max_seconds)
    except BaseException:
        opened.close()
        raise
    expected = -(-opened.frames * sr // opened.rate) if opened.frames else None
    return expected, _blocks(opened, sr, max_seconds, name)


def _blocks(opened: _Opened, sr: int, max_seconds: Optional[float], name: str) -> Iterator[np.ndarray]:
    limit = None if max_seconds is None else int(max_seconds * sr)
    n = 0
    try:
        for block in _quietly(_resampled(_checked(opened.blocks, name), opened.rate, sr)):
            n += len(block)
            if limit is not None and n > limit:
                raise AudioError(f"{name}: decodes to more than the {max_seconds / 3600:g} h limit at {sr} Hz "
                                 "(longer than its header said)")
            np.clip(block, -1.0, 1.0, out=block)
            yield block
        if n == 0:
            raise AudioError(f"{name}: audio is empty (0 samples)")
    except AudioError:
        raise
    except Exception as exc:  # a decode error in the middle of the file
        raise AudioError(f"{name}: cannot decode audio ({type(exc).__name__}: "
                         f"{getattr(exc, 'strerror', None) or exc})") from None
    finally:
        opened.close()


def iter_audio(source: Source, sr: int = 22050, *, max_seconds: Optional[float] = MAX_AUDIO_SECONDS,
               decoder: str = "auto", name: Optional[str] = None) -> Iterator[np.ndarray]:
    """Decode ``source`` as a stream of mono float32 blocks at ``sr``.

    The file is opened and its header checked at the call (errors come at once); samples are
    decoded as the blocks are taken.

    Parameters
    ----------
    source : str, os.PathLike, bytes or binary file object
        An audio file (any format in :data:`AUDIO_EXTENSIONS`, or any content the decoders read).
    sr : int
        Target sample rate (Hz).
    max_seconds : float or None
        Refuse audio longer than this at ``sr`` (checked against the header before decoding, and
        while decoding when the header says nothing or lies); None: no limit.
    decoder : {"auto", "soundfile", "av"}
    name : str, optional
        How errors name the source (default: the path, or ``"<bytes>"``).

    Returns
    -------
    iterator of np.ndarray, each shape (n_block,), float32
        Consecutive samples in [-1, 1] (decoders and resampling may overshoot full scale
        slightly: clipped). Block lengths vary (a few thousand to tens of thousands of samples).

    Raises
    ------
    AudioError
        Missing file, not audio, undecodable, implausible header rate, too long, empty or
        non-finite; the message names the source. :class:`MissingDecoderError` when the file
        needs ``av`` and it is not installed.
    """
    return _stream(source, sr, max_seconds, decoder, name)[1]


def decode_audio(source: Source, sr: int = 22050, *, max_seconds: Optional[float] = MAX_AUDIO_SECONDS,
                 decoder: str = "auto", name: Optional[str] = None) -> np.ndarray:
    """Decode a whole file to mono float32 at ``sr`` (the blocks of :func:`iter_audio`, joined).

    The result is written into one buffer sized from the header, so the peak is the result plus
    one block (joining a list of blocks would hold everything twice).

    Parameters
    ----------
    source, sr, max_seconds, decoder, name
        As for :func:`iter_audio`.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32

    Raises
    ------
    AudioError
        As for :func:`iter_audio`.
    """
    expected, blocks = _stream(source, sr, max_seconds, decoder, name)
    out = np.empty(expected or 30 * sr, np.float32)  # no length in the header: start at 30 s
    n = 0
    with _quiet_decoder():  # once for the whole file (per block, it would be one temporary file each)
        for block in blocks:
            n = _append(out, n, block)
    out.resize(n, refcheck=False)  # shrinks in place (realloc), no copy
    return out


def _append(out: np.ndarray, n: int, block: np.ndarray) -> int:
    """Copy ``block`` into ``out`` at ``n`` (growing ``out`` in place if needed); the new length."""
    if n + len(block) > len(out):  # the header undercounted: grow by a quarter (rare)
        out.resize(max(n + len(block), len(out) + len(out) // 4), refcheck=False)
    out[n:n + len(block)] = block
    return n + len(block)
