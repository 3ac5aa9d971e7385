"""Procedural synthetic audio for the five seed genres.

Each generator turns a seeded :class:`numpy.random.Generator` into one mono clip. Tempo, key,
progression position, voicing, timbre, swing amount, dynamics, noise floor and length are drawn
per clip, so a genre is a *family* of sounds rather than one fingerprint, while the same seed always
gives the same samples.

Synthesis is vectorised: every voice is a wavetable oscillator driven by a per-sample frequency
track (so pitch bends and vibrato cost one ``cumsum``) and multiplied by a per-sample envelope;
drums are short pre-rendered hits added at their onsets. A 5-s clip takes a few milliseconds.

Adding a genre is one function with the signature ``fn(rng, sr=SAMPLE_RATE, duration=None)`` and
one call to :func:`register_genre` (or one entry in :data:`GENRE_GENERATORS`).
"""

from __future__ import annotations

import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    from .features import SAMPLE_RATE
except ImportError:  # running from a checkout, not as a Hub dynamic module
    from features import SAMPLE_RATE

__all__ = [
    "SAMPLE_RATE",
    "CLIP_SECONDS_RANGE",
    "GENRE_GENERATORS",
    "make_jazz",
    "make_blues",
    "make_rock",
    "make_pop",
    "make_classical",
    "generate_clip",
    "generate_dataset",
    "register_genre",
]

#: Range (seconds) a clip length is drawn from when ``duration`` is None; centred on the 5-s
#: training clip length so window-length features see realistic variation.
CLIP_SECONDS_RANGE: Tuple[float, float] = (4.0, 6.0)

GeneratorFn = Callable[..., np.ndarray]

_TABLE_SIZE = 4096  # wavetable length (power of two: the phase wrap is a bit mask)
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR_PENTATONIC_BLUES = np.array([0, 3, 5, 6, 7, 10])  # minor pentatonic + the blue note b5


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def _midi_hz(midi: np.ndarray) -> np.ndarray:
    """MIDI note number(s) -> frequency in Hz (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _harmonic_table(amps: Sequence[float]) -> np.ndarray:
    """One period of ``sum_k amps[k-1] * sin(2 pi k x)``, peak-normalised.

    Parameters
    ----------
    amps : sequence of float, shape (n_partials,)
        Amplitude of partial ``k`` (1-based) at index ``k - 1``.

    Returns
    -------
    np.ndarray, shape (_TABLE_SIZE,), float32
    """
    spec = np.zeros(_TABLE_SIZE // 2 + 1, dtype=np.complex128)
    amps = np.asarray(amps, dtype=np.float64)
    spec[1 : len(amps) + 1] = -1j * amps * (_TABLE_SIZE / 2)
    table = np.fft.irfft(spec, _TABLE_SIZE)
    return (table / np.max(np.abs(table))).astype(np.float32)


def _oscillator(table: np.ndarray, freq: np.ndarray, sr: int, phase0: float = 0.0) -> np.ndarray:
    """Play ``table`` along a per-sample frequency track.

    Parameters
    ----------
    table : np.ndarray, shape (_TABLE_SIZE,)
    freq : np.ndarray, shape (n,)
        Instantaneous frequency in Hz for every output sample.
    sr : int
    phase0 : float
        Starting phase in cycles.

    Returns
    -------
    np.ndarray, shape (n,), float32
    """
    # Phase accumulates in float64: float32 would drift audibly over a few seconds.
    phase = np.cumsum(freq, dtype=np.float64)
    phase *= _TABLE_SIZE / sr
    idx = (phase + phase0 * _TABLE_SIZE).astype(np.int64) & (_TABLE_SIZE - 1)
    return table[idx]


class _Notes:
    """A monophonic rhythm rendered on the sample grid.

    Chord tones that share a rhythm share one ``_Notes`` (the expensive sample->note lookup
    and the envelope are computed once) and differ only in pitch.

    Parameters
    ----------
    n : int
        Number of output samples.
    sr : int
    onsets, durations : np.ndarray, shape (n_notes,)
        Seconds; onsets must be non-decreasing.
    velocities : np.ndarray, shape (n_notes,)
    attack, decay, release : float
        Seconds: linear attack, exponential decay time constant while the note is held,
        exponential release time constant after it ends.
    """

    def __init__(self, n, sr, onsets, durations, velocities, attack, decay, release):
        self.n_notes = len(onsets)
        if self.n_notes == 0:  # a silent voice: one inaudible note keeps the indexing uniform
            onsets, durations, velocities = [0.0], [0.0], [0.0]
        starts = np.clip(np.round(np.asarray(onsets) * sr).astype(np.int64), 0, n)
        # Sample -> index of the note sounding there (np.repeat over note lengths is O(n)).
        lengths = np.diff(np.append(starts, n))
        first = int(starts[0]) if len(starts) else n
        k = np.concatenate([np.zeros(first, np.int64), np.repeat(np.arange(len(starts)), lengths)])
        pos = np.arange(n, dtype=np.int64)
        t = (pos - starts[k]).astype(np.float32) * np.float32(1.0 / sr)
        dur = np.asarray(durations, dtype=np.float32)[k]
        # One exp for decay and release: exp(-t/decay - max(t - dur, 0)/release).
        expo = np.maximum(t - dur, 0.0)
        expo *= np.float32(-1.0 / release)
        expo -= t * np.float32(1.0 / decay)
        np.maximum(expo, -60.0, out=expo)  # avoid float32 denormals (slow) in exp
        env = np.exp(expo)
        env *= np.minimum(t * np.float32(1.0 / attack), 1.0)
        env *= np.asarray(velocities, dtype=np.float32)[k]
        env[:first] = 0.0
        self.n, self.sr, self.k, self.t, self.env = n, sr, k, t, env

    def render(self, table, midis, *, bend=None, bend_time=0.1, vibrato=None, phase0=0.0):
        """Render one voice of this rhythm.

        Parameters
        ----------
        table : np.ndarray, shape (_TABLE_SIZE,)
        midis : np.ndarray, shape (n_notes,)
            Pitch of every note (MIDI numbers, fractional allowed).
        bend : np.ndarray, shape (n_notes,), optional
            Semitones below the target each note starts at; it glides up over ``bend_time``.
        vibrato : tuple (rate_hz, depth_semitones), optional

        Returns
        -------
        np.ndarray, shape (n,), float32
        """
        if self.n_notes == 0:
            return np.zeros(self.n, dtype=np.float32)
        freq = _midi_hz(midis).astype(np.float32)[self.k]
        if bend is not None:
            b = np.asarray(bend, dtype=np.float32)[self.k]
            frac = np.minimum(self.t * np.float32(1.0 / bend_time), 1.0)
            freq *= np.exp2(-b * (1.0 - frac) / np.float32(12.0))
        if vibrato is not None:
            rate, depth = vibrato
            tt = np.arange(self.n, dtype=np.float32) * np.float32(2 * np.pi * rate / self.sr)
            freq *= np.exp2(np.float32(depth / 12.0) * np.sin(tt))
        return _oscillator(table, freq, self.sr, phase0) * self.env


def _place(buf: np.ndarray, hit: np.ndarray, times: np.ndarray, gains: np.ndarray, sr: int) -> None:
    """Add ``hit`` into ``buf`` (in place) at each time in ``times`` (seconds) scaled by ``gains``."""
    for t, g in zip(times, gains):
        p = int(round(t * sr))
        if p >= len(buf) or p < 0:
            continue
        end = min(len(buf), p + len(hit))
        buf[p:end] += g * hit[: end - p]


def _kick(rng, sr):
    """Sine with a fast downward pitch sweep and exponential decay; shape (~0.3 s * sr,)."""
    t = np.arange(int(0.3 * sr), dtype=np.float32) / sr
    f_end, f_start = rng.uniform(45, 65), rng.uniform(120, 200)
    freq = f_end + (f_start - f_end) * np.exp(-t / rng.uniform(0.02, 0.05))
    phase = np.cumsum(freq) * (2 * np.pi / sr)
    return (np.sin(phase) * np.exp(-t / rng.uniform(0.08, 0.16))).astype(np.float32)


def _snare(rng, sr, noise):
    """Noise burst plus a ~190 Hz body; shape (~0.25 s * sr,)."""
    n = int(0.25 * sr)
    t = np.arange(n, dtype=np.float32) / sr
    body = np.sin(2 * np.pi * rng.uniform(170, 230) * t) * np.exp(-t / 0.04)
    rattle = noise[:n] * np.exp(-t / rng.uniform(0.05, 0.1))
    return (0.5 * body + rng.uniform(0.6, 1.0) * rattle).astype(np.float32)


def _hihat(rng, sr, noise, open_=False):
    """High-passed (first difference of) noise with a short decay; shape (~0.2 s * sr,)."""
    n = int(0.2 * sr)
    t = np.arange(n, dtype=np.float32) / sr
    hp = np.diff(noise[: n + 1])
    tau = rng.uniform(0.05, 0.09) if open_ else rng.uniform(0.01, 0.025)
    return (0.5 * hp * np.exp(-t / tau)).astype(np.float32)


def _ride(rng, sr, noise):
    """Metallic ride: a few inharmonic partials plus bright noise, long decay; shape (0.5 s*sr,)."""
    n = int(0.5 * sr)
    t = np.arange(n, dtype=np.float32) / sr
    f0 = rng.uniform(380, 520)
    ratios = np.array([1.0, 1.47, 2.09, 2.56, 3.37], dtype=np.float32)
    partials = np.sin(2 * np.pi * f0 * ratios[:, None] * t[None, :]).sum(axis=0) / 5
    hp = np.diff(noise[: n + 1])
    return ((0.4 * partials + 0.3 * hp) * np.exp(-t / rng.uniform(0.2, 0.4))).astype(np.float32)


def _humanise(rng, times, ms):
    """Jitter onset times by N(0, ms) milliseconds, keeping them non-negative and sorted."""
    return np.sort(np.maximum(times + rng.normal(0.0, ms / 1000.0, len(times)), 0.0))


def _eighths(beats: np.ndarray, period: float, swing: float) -> np.ndarray:
    """8th-note grid: each beat plus an off-beat at ``swing`` of the beat (0.5 = straight)."""
    return np.sort(np.concatenate([beats, beats + swing * period]))


def _compress(y: np.ndarray, sr: int, threshold: float, ratio: float) -> np.ndarray:
    """Feed-forward compressor on 10-ms block RMS (gain interpolated between blocks)."""
    block = max(1, int(0.01 * sr))
    nb = -(-len(y) // block)
    padded = np.zeros(nb * block, dtype=np.float32)
    padded[: len(y)] = y
    level = np.sqrt(np.mean(padded.reshape(nb, block) ** 2, axis=1) + 1e-12)
    # One-pole smoothing of the level (attack ~ release ~ 30 ms) without a Python loop over
    # samples: a short moving average over blocks is close enough for a synthetic mix.
    level = np.convolve(level, np.ones(3) / 3, mode="same")
    gain = np.where(level > threshold, (level / threshold) ** (1.0 / ratio - 1.0), 1.0)
    centres = (np.arange(nb) + 0.5) * block
    return y * np.interp(np.arange(len(y)), centres, gain).astype(np.float32)


def _finish(rng, mix: np.ndarray, noise_db: Tuple[float, float] = (-65.0, -38.0)) -> np.ndarray:
    """Normalise, add a random noise floor, apply a random output level; float32 in [-1, 1]."""
    peak = float(np.max(np.abs(mix)))
    if peak > 0:
        mix = mix / peak
    level = 10.0 ** (rng.uniform(*noise_db) / 20.0)
    mix = mix + level * rng.standard_normal(len(mix), dtype=np.float32)
    mix *= rng.uniform(0.25, 0.95) / max(float(np.max(np.abs(mix))), 1e-9)
    return np.clip(mix, -1.0, 1.0).astype(np.float32, copy=False)


def _length(rng, sr: int, duration: Optional[float]) -> int:
    """Number of samples for ``duration`` seconds, or a random length in CLIP_SECONDS_RANGE."""
    if duration is None:
        duration = rng.uniform(*CLIP_SECONDS_RANGE)
    if not np.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    if not isinstance(sr, (int, np.integer)) or sr < 4000:
        raise ValueError(f"sr must be an integer sample rate >= 4000 Hz, got {sr!r}")
    return int(round(duration * sr))


def _beat_grid(rng, n: int, sr: int, bpm: float) -> Tuple[np.ndarray, float]:
    """Beat times (s) covering the clip, starting at a random fraction of a beat, and the period."""
    period = 60.0 / bpm
    offset = rng.uniform(0.0, period)
    beats = np.arange(offset - period, n / sr + period, period)
    return beats[beats >= -1e-9], period


def _timbre(rng, n_partials: int, rolloff: Tuple[float, float], odd_boost=1.0) -> np.ndarray:
    """Harmonic amplitudes ``k ** -alpha`` with jitter; ``odd_boost`` scales odd partials."""
    k = np.arange(1, n_partials + 1, dtype=np.float64)
    amps = k ** -rng.uniform(*rolloff) * rng.uniform(0.7, 1.3, n_partials)
    amps[0::2] *= odd_boost  # partials 1, 3, 5, ...
    amps[0] = 1.0
    return amps


# --------------------------------------------------------------------------------------------
# Genres
# --------------------------------------------------------------------------------------------


def make_jazz(rng: np.random.Generator, sr: int = SAMPLE_RATE, duration: Optional[float] = None) -> np.ndarray:
    """Swing jazz: ii-V-I-VI with 7th/9th voicings, walking bass, swung melody, ride cymbal.

    Swing (long-short 8ths, ratio 0.58-0.72 of the beat), chromatic passing tones in the bass and
    melody, 7th and 9th chord extensions and a lead timbre with strong 7th and 9th partials.

    Parameters
    ----------
    rng : numpy.random.Generator
    sr : int
    duration : float or None
        Seconds; None draws from :data:`CLIP_SECONDS_RANGE`.

    Returns
    -------
    np.ndarray, shape (round(duration * sr),), float32 in [-1, 1]
    """
    n = _length(rng, sr, duration)
    beats, period = _beat_grid(rng, n, sr, rng.uniform(110, 200))
    swing = rng.uniform(0.58, 0.72)
    key = 48 + int(rng.integers(0, 12))
    # ii7 V7 Imaj7 VI7 with 9ths; voicings are rootless (3, 7, 9 [, 5 or 13]) like a pianist's.
    roots = np.array([2, 7, 0, 9])
    voicings = [np.array(v) for v in ([3, 10, 14, 7], [4, 10, 14, 9], [4, 11, 14, 7], [4, 10, 13, 7])]
    n_voices = int(rng.integers(3, 5))
    chord_of_beat = (np.arange(len(beats)) // 4 + int(rng.integers(0, 4))) % 4
    noise = rng.standard_normal(int(0.6 * sr) + 2).astype(np.float32)
    mix = np.zeros(n, dtype=np.float32)

    # Comping: stabs on beat 1 and the swung "and" of 2 (Charleston), short piano-like decay.
    bar_starts = beats[::4]
    comp_t = np.concatenate([bar_starts, bar_starts + (1 + swing) * period])
    comp_chord = np.concatenate([chord_of_beat[::4], chord_of_beat[::4]])
    order = np.argsort(comp_t, kind="stable")
    comp_t, comp_chord = _humanise(rng, comp_t[order], 8), comp_chord[order]
    comp = _Notes(n, sr, comp_t, np.full(len(comp_t), 0.35 * period), rng.uniform(0.5, 0.9, len(comp_t)),
                  0.005, rng.uniform(0.3, 0.8), 0.05)
    comp_table = _harmonic_table(_timbre(rng, 8, (1.2, 2.0)))
    for v in range(n_voices):
        midis = key + 12 + roots[comp_chord] + np.array([vc[v] for vc in voicings])[comp_chord]
        mix += 0.18 * comp.render(comp_table, midis, phase0=rng.uniform())

    # Walking bass: root on beat 1, chord tones, then a chromatic approach to the next root.
    walk = np.empty(len(beats))
    for i, c in enumerate(chord_of_beat):
        pos = i % 4
        root = key - 12 + roots[c]
        nxt = key - 12 + roots[(c + 1) % 4]
        walk[i] = [root, root + rng.choice([3, 4]), root + 7, nxt + rng.choice([-1, 1])][pos]
    bass = _Notes(n, sr, _humanise(rng, beats, 6), np.full(len(beats), 0.9 * period),
                  rng.uniform(0.7, 1.0, len(beats)), 0.01, rng.uniform(0.4, 0.9), 0.06)
    mix += 0.45 * bass.render(_harmonic_table([1.0, 0.5, 0.25, 0.1]), walk)

    # Melody: swung 8ths from the scale with chromatic passing tones, ~30% rests.
    e8 = _eighths(beats, period, swing)
    keep = rng.random(len(e8)) > 0.3
    e8 = e8[keep]
    steps = rng.choice([-2, -1, 1, 2], len(e8))
    degree = np.cumsum(steps) + int(rng.integers(4, 10))
    mel = key + 12 + 12 * (degree // 7) + _MAJOR[degree % 7]
    passing = rng.random(len(e8)) < 0.25
    mel = mel + passing * rng.choice([-1, 1], len(e8))  # chromatic neighbour tones
    accents = np.where(np.isclose((e8 / period) % 1.0, swing % 1.0, atol=0.05), 1.0, 0.7)
    lead_amps = _timbre(rng, 10, (0.9, 1.5))
    lead_amps[6] *= rng.uniform(2.0, 4.0)  # 7th harmonic
    lead_amps[8] *= rng.uniform(2.0, 4.0)  # 9th harmonic
    lead = _Notes(n, sr, _humanise(rng, e8, 10), np.full(len(e8), swing * period),
                  accents * rng.uniform(0.6, 1.0, len(e8)), 0.02, rng.uniform(0.5, 1.5), 0.05)
    mix += 0.3 * lead.render(_harmonic_table(lead_amps), mel, vibrato=(rng.uniform(4.5, 6), 0.08))

    # Ride "ding, ding-a ding" with the skip note swung; hi-hat pedal on 2 and 4.
    ride_t = np.concatenate([beats, beats[1::2] + swing * period])
    _place(mix, _ride(rng, sr, noise), _humanise(rng, ride_t, 5), rng.uniform(0.08, 0.16, len(ride_t)), sr)
    _place(mix, _hihat(rng, sr, noise), beats[1::2], rng.uniform(0.1, 0.2, len(beats[1::2])), sr)
    return _finish(rng, mix)


def make_blues(rng: np.random.Generator, sr: int = SAMPLE_RATE, duration: Optional[float] = None) -> np.ndarray:
    """12-bar blues: shuffle boogie bass, pentatonic lead with pitch bends, shuffle hi-hat.

    Parameters and return value as in :func:`make_jazz`.
    """
    n = _length(rng, sr, duration)
    beats, period = _beat_grid(rng, n, sr, rng.uniform(65, 115))
    shuffle = rng.uniform(0.62, 0.71)
    key = 40 + int(rng.integers(0, 12))
    twelve_bar = np.array([0, 0, 0, 0, 5, 5, 0, 0, 7, 5, 0, 0])
    bar = (np.arange(len(beats)) // 4 + int(rng.integers(0, 12))) % 12
    chord_root = twelve_bar[bar]
    noise = rng.standard_normal(int(0.3 * sr) + 2).astype(np.float32)
    mix = np.zeros(n, dtype=np.float32)

    # Boogie: shuffled 8ths root-5th / root-6th in the low register, slightly driven guitar.
    e8 = _eighths(beats, period, shuffle)
    beat_idx = np.repeat(np.arange(len(beats)), 2)
    upper = np.where((beat_idx % 2) == 0, 7, 9)  # root-5th on odd beats, root-6th on even beats
    boogie = np.stack([key + chord_root[beat_idx], key + chord_root[beat_idx] + upper])
    rhythm = _Notes(n, sr, _humanise(rng, e8, 6), np.full(len(e8), 0.45 * period),
                    rng.uniform(0.6, 1.0, len(e8)), 0.008, rng.uniform(0.2, 0.5), 0.04)
    gtr = _harmonic_table(_timbre(rng, 12, (0.9, 1.4)))
    rhythm_mix = rhythm.render(gtr, boogie[0]) + 0.8 * rhythm.render(gtr, boogie[1], phase0=0.3)
    mix += 0.35 * np.tanh(rng.uniform(1.0, 2.5) * rhythm_mix)

    # Lead: call phrases from the blues scale, notes bent up 1-2 semitones into pitch.
    n_notes = max(2, int(len(beats) * rng.uniform(0.8, 1.5)))
    lead_t = np.sort(rng.choice(e8[: max(len(e8) - 1, 1)], size=min(n_notes, max(len(e8) - 1, 1)), replace=False))
    deg = np.clip(np.cumsum(rng.choice([-2, -1, 1, 2], len(lead_t))) + 6, 0, 17)
    lead_midi = key + 24 + 12 * (deg // 6) + _MINOR_PENTATONIC_BLUES[deg % 6]
    bends = np.where(rng.random(len(lead_t)) < 0.5, rng.choice([1.0, 2.0], len(lead_t)), 0.0)
    durs = np.diff(np.append(lead_t, n / sr)) * 0.95
    lead = _Notes(n, sr, lead_t, durs, rng.uniform(0.6, 1.0, len(lead_t)), 0.01, rng.uniform(0.6, 1.5), 0.08)
    mix += 0.35 * lead.render(_harmonic_table(_timbre(rng, 10, (0.8, 1.3))), lead_midi, bend=bends,
                              bend_time=rng.uniform(0.06, 0.15), vibrato=(rng.uniform(5, 7), 0.15))

    # Shuffle hi-hat on every shuffled 8th, kick on 1 and 3, soft snare on 2 and 4.
    _place(mix, _hihat(rng, sr, noise), e8, rng.uniform(0.08, 0.18, len(e8)), sr)
    _place(mix, _kick(rng, sr), beats[0::2], rng.uniform(0.3, 0.5, len(beats[0::2])), sr)
    _place(mix, _snare(rng, sr, noise), beats[1::2], rng.uniform(0.1, 0.25, len(beats[1::2])), sr)
    return _finish(rng, mix)


def make_rock(rng: np.random.Generator, sr: int = SAMPLE_RATE, duration: Optional[float] = None) -> np.ndarray:
    """Rock: tanh-distorted power chords (root, 5th, octave), bass, kick/snare on alternate beats.

    Parameters and return value as in :func:`make_jazz`.
    """
    n = _length(rng, sr, duration)
    beats, period = _beat_grid(rng, n, sr, rng.uniform(100, 170))
    key = 40 + int(rng.integers(0, 12))
    progressions = ([0, 10, 5, 7], [0, 5, 7, 5], [0, 8, 10, 0], [0, 3, 5, 3])
    prog = np.array(progressions[int(rng.integers(0, len(progressions)))])
    chord_of_beat = prog[(np.arange(len(beats)) // int(rng.choice([2, 4])) + int(rng.integers(0, 4))) % 4]
    noise = rng.standard_normal(int(0.3 * sr) + 2).astype(np.float32)
    mix = np.zeros(n, dtype=np.float32)

    # Power chords: chugging 8ths (palm-muted, short) or sustained whole beats.
    e8 = _eighths(beats, period, 0.5)
    beat_idx = np.repeat(np.arange(len(beats)), 2)
    palm = rng.random() < 0.5
    hold = 0.4 * period if palm else period
    chords = _Notes(n, sr, _humanise(rng, e8, 4), np.full(len(e8), hold), rng.uniform(0.8, 1.0, len(e8)),
                    0.003, rng.uniform(0.15, 0.3) if palm else rng.uniform(0.8, 2.0), 0.03)
    saw = _harmonic_table(_timbre(rng, 16, (0.6, 1.0)))
    roots = key + chord_of_beat[beat_idx] + 12 * int(rng.integers(0, 2))
    power = sum(chords.render(saw, roots + iv, phase0=0.37 * j) for j, iv in enumerate((0, 7, 12)))
    drive = rng.uniform(3.0, 12.0)
    mix += 0.5 * np.tanh(drive * 0.4 * power) / np.tanh(drive * 0.4)

    bass = _Notes(n, sr, e8, np.full(len(e8), 0.45 * period), np.ones(len(e8)), 0.005, 0.4, 0.03)
    mix += 0.35 * bass.render(_harmonic_table([1.0, 0.6, 0.3, 0.15, 0.05]), key - 12 + chord_of_beat[beat_idx])

    # Drums: kick on beats 1 and 3, snare on 2 and 4, closed hi-hat 8ths.
    _place(mix, _kick(rng, sr), beats[0::2], rng.uniform(0.7, 1.0, len(beats[0::2])), sr)
    _place(mix, _snare(rng, sr, noise), beats[1::2], rng.uniform(0.5, 0.8, len(beats[1::2])), sr)
    _place(mix, _hihat(rng, sr, noise), e8, rng.uniform(0.15, 0.3, len(e8)), sr)
    return _finish(rng, mix)


def make_pop(rng: np.random.Generator, sr: int = SAMPLE_RATE, duration: Optional[float] = None) -> np.ndarray:
    """Pop: I-V-vi-IV pad, clean major melody, verse->chorus lift, four-on-the-floor, compressed.

    Parameters and return value as in :func:`make_jazz`.
    """
    n = _length(rng, sr, duration)
    beats, period = _beat_grid(rng, n, sr, rng.uniform(95, 130))
    key = 55 + int(rng.integers(0, 12))
    roots = np.array([0, 7, 9, 5])
    triads = np.array([[0, 4, 7], [0, 4, 7], [0, 3, 7], [0, 4, 7]])
    chord = (np.arange(len(beats)) // 4 + int(rng.integers(0, 4))) % 4
    # Verse-chorus: the chorus starts at a bar line inside the clip and lifts level and register.
    n_bars = max(1, len(beats) // 4)
    chorus_bar = int(rng.integers(0, n_bars + 1))
    in_chorus = (np.arange(len(beats)) // 4) >= chorus_bar
    noise = rng.standard_normal(int(0.3 * sr) + 2).astype(np.float32)
    mix = np.zeros(n, dtype=np.float32)

    pad = _Notes(n, sr, beats[::2], np.full(len(beats[::2]), 2 * period),
                 np.where(in_chorus[::2], 1.0, 0.6), rng.uniform(0.05, 0.15), 3.0, 0.2)
    pad_table = _harmonic_table(_timbre(rng, 6, (1.5, 2.5)))
    inversion = int(rng.integers(0, 3))
    for v in range(3):
        iv = triads[chord[::2], (v + inversion) % 3] + 12 * ((v + inversion) >= 3)
        mix += 0.15 * pad.render(pad_table, key - 12 + roots[chord[::2]] + iv, phase0=0.2 * v)

    # Clean melody on the major scale: 8ths/quarters, chord tones on strong beats.
    e8 = _eighths(beats, period, 0.5)
    keep = rng.random(len(e8)) > 0.35
    keep[::2] |= rng.random(len(keep[::2])) > 0.5
    mt = e8[keep]
    beat_of = np.minimum((np.searchsorted(beats, mt, side="right") - 1), len(beats) - 1)
    deg = np.clip(np.cumsum(rng.choice([-1, 1, 0, 2, -2], len(mt), p=[0.3, 0.3, 0.1, 0.15, 0.15])) + 7, 0, 16)
    mel = key + 12 * (deg // 7) + _MAJOR[deg % 7] + 12 * in_chorus[beat_of] * int(rng.integers(0, 2))
    durs = np.diff(np.append(mt, n / sr)) * 0.9
    lead = _Notes(n, sr, mt, durs, np.where(in_chorus[beat_of], 1.0, 0.7), 0.01, rng.uniform(0.8, 2.0), 0.05)
    mix += 0.35 * lead.render(_harmonic_table([1.0, rng.uniform(0.05, 0.3), rng.uniform(0.0, 0.1)]), mel)

    # Four-on-the-floor kick, clap/snare on 2 and 4, off-beat hi-hats (busier in the chorus).
    _place(mix, _kick(rng, sr), beats, rng.uniform(0.8, 1.0, len(beats)), sr)
    _place(mix, _snare(rng, sr, noise), beats[1::2], rng.uniform(0.3, 0.5, len(beats[1::2])), sr)
    off = beats + 0.5 * period
    _place(mix, _hihat(rng, sr, noise, open_=rng.random() < 0.5), off,
           np.where(in_chorus, 0.25, 0.12) * rng.uniform(0.8, 1.0, len(off)), sr)

    peak = float(np.max(np.abs(mix))) or 1.0
    mix = _compress(mix / peak, sr, threshold=rng.uniform(0.1, 0.25), ratio=rng.uniform(3.0, 8.0))
    return _finish(rng, mix)


def make_classical(rng: np.random.Generator, sr: int = SAMPLE_RATE, duration: Optional[float] = None) -> np.ndarray:
    """Classical strings: many-partial timbre, vibrato, slow attacks, wide crescendo, no drums.

    Parameters and return value as in :func:`make_jazz`.
    """
    n = _length(rng, sr, duration)
    beats, period = _beat_grid(rng, n, sr, rng.uniform(50, 100))
    minor = rng.random() < 0.5
    key = 48 + int(rng.integers(0, 12))
    scale = np.array([0, 2, 3, 5, 7, 8, 11]) if minor else _MAJOR
    prog = np.array([0, 3, 4, 0])  # I/i IV/iv V I/i as scale degrees
    chord_of = (np.arange(len(beats)) // 2 + int(rng.integers(0, 4))) % 4
    mix = np.zeros(n, dtype=np.float32)

    # String section: sustained chord tones (degrees 0, 2, 4 of the chord), slow bowed attacks.
    amps = _timbre(rng, int(rng.integers(14, 25)), (1.1, 1.8))
    amps[1::2] *= rng.uniform(0.5, 1.0)  # body resonance: even partials a bit weaker
    table = _harmonic_table(amps)
    ct = beats[::2]
    section = _Notes(n, sr, _humanise(rng, ct, 15), np.full(len(ct), 2 * period), rng.uniform(0.7, 1.0, len(ct)),
                     rng.uniform(0.08, 0.25), 4.0, 0.3)
    vib_rate, vib_depth = rng.uniform(4.5, 7.0), rng.uniform(0.1, 0.3)
    for v, octave in enumerate((-12, 0, 0)):
        deg = prog[chord_of[::2]] + 2 * v
        midis = key + octave + 12 * (deg // 7) + scale[deg % 7]
        mix += 0.22 * section.render(table, midis, vibrato=(vib_rate * rng.uniform(0.9, 1.1), vib_depth),
                                     phase0=rng.uniform())

    # Melody: legato quarters/halves stepping through the scale above the section.
    mt = beats[rng.random(len(beats)) > 0.35] if len(beats) > 1 else beats
    deg = np.clip(np.cumsum(rng.choice([-1, 1, -2, 2], len(mt))) + 9, 0, 20)
    mel = key + 12 + 12 * (deg // 7) + scale[deg % 7]
    durs = np.diff(np.append(mt, n / sr))
    lead = _Notes(n, sr, mt, durs, rng.uniform(0.8, 1.0, len(mt)), rng.uniform(0.05, 0.15), 5.0, 0.2)
    mix += 0.35 * lead.render(table, mel, vibrato=(vib_rate, vib_depth * 1.3))

    # Wide crescendo (or swell): the level rises 15-30 dB across the clip.
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)
    floor = 10.0 ** (-rng.uniform(15.0, 30.0) / 20.0)
    shape = t ** rng.uniform(0.6, 2.0)
    if rng.random() < 0.3:  # swell: up then back down
        shape = np.abs(np.sin(np.pi * t)) ** rng.uniform(0.7, 1.5)
    mix *= floor + (1.0 - floor) * shape
    return _finish(rng, mix, noise_db=(-70.0, -45.0))


# --------------------------------------------------------------------------------------------
# Registry and dataset
# --------------------------------------------------------------------------------------------

#: Genre name -> generator ``fn(rng, sr=SAMPLE_RATE, duration=None) -> float32 array``.
#: Keys are in the seed's order (jazz, blues, rock, pop, classical) = configuration.DEFAULT_GENRES.
GENRE_GENERATORS: Dict[str, GeneratorFn] = {
    "jazz": make_jazz,
    "blues": make_blues,
    "rock": make_rock,
    "pop": make_pop,
    "classical": make_classical,
}


def register_genre(name: str, fn: GeneratorFn, *, overwrite: bool = False) -> None:
    """Add a generator to :data:`GENRE_GENERATORS` (appended after the existing genres).

    Parameters
    ----------
    name : str
        Genre name (non-empty).
    fn : callable
        ``fn(rng, sr=SAMPLE_RATE, duration=None) -> np.ndarray`` (mono float32 in [-1, 1]).
    overwrite : bool
        Replace an existing generator of the same name instead of raising.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"genre name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"generator for {name!r} must be callable, got {type(fn).__name__}")
    if name in GENRE_GENERATORS and not overwrite:
        raise ValueError(f"genre {name!r} is already registered; pass overwrite=True to replace it")
    GENRE_GENERATORS[name] = fn


def generate_clip(genre: str, rng: np.random.Generator, sr: int = SAMPLE_RATE,
                  duration: Optional[float] = None) -> np.ndarray:
    """Generate one clip of ``genre``.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32 in [-1, 1]

    Raises
    ------
    KeyError
        Unknown genre; the message lists the registered genres.
    """
    try:
        fn = GENRE_GENERATORS[genre]
    except KeyError:
        raise KeyError(f"unknown genre {genre!r}; known genres: {', '.join(GENRE_GENERATORS)}") from None
    y = fn(rng, sr=sr, duration=duration)
    return np.asarray(y, dtype=np.float32)


def _clip_rng(seed: int, genre: str, index: int) -> np.random.Generator:
    """Independent stream per (seed, genre, index): a clip does not depend on the dataset size,
    the other genres, or their order."""
    return np.random.default_rng([int(seed), zlib.crc32(genre.encode("utf-8")), int(index)])


def generate_dataset(n_per_genre: int, seed: int = 0, genres: Optional[Sequence[str]] = None,
                     sr: int = SAMPLE_RATE, duration: Optional[float] = None
                     ) -> Tuple[List[np.ndarray], np.ndarray]:
    """Generate ``n_per_genre`` clips of every genre, deterministically for ``seed``.

    Parameters
    ----------
    n_per_genre : int
    seed : int
    genres : sequence of str, optional
        Defaults to all registered genres in registry order; label ``i`` means ``genres[i]``.
    sr : int
    duration : float or None
        Fixed clip length in seconds, or None for random lengths in :data:`CLIP_SECONDS_RANGE`.

    Returns
    -------
    clips : list of np.ndarray
        ``len(genres) * n_per_genre`` float32 arrays, genre-major order.
    labels : np.ndarray, shape (len(genres) * n_per_genre,), int64
    """
    if int(n_per_genre) < 0:
        raise ValueError(f"n_per_genre must be >= 0, got {n_per_genre}")
    genres = list(GENRE_GENERATORS) if genres is None else list(genres)
    clips: List[np.ndarray] = []
    labels: List[int] = []
    for label, genre in enumerate(genres):
        if genre not in GENRE_GENERATORS:
            raise KeyError(f"unknown genre {genre!r}; known genres: {', '.join(GENRE_GENERATORS)}")
        for i in range(int(n_per_genre)):
            clips.append(generate_clip(genre, _clip_rng(seed, genre, i), sr=sr, duration=duration))
            labels.append(label)
    return clips, np.asarray(labels, dtype=np.int64)
