"""Audio front end for the Hub: a feature extractor and an audio-classification pipeline.

`pipeline(model=repo_or_dir, trust_remote_code=True)("song.mp3")` must work with neither ffmpeg nor
torchaudio, which the stock "audio-classification" pipeline needs for files and for resampling. So
the exported `config.json` names this module's `MusicGenreClassificationPipeline` under
`custom_pipelines["audio-classification"]`, and `preprocessor_config.json` maps `AutoFeatureExtractor`
to `MusicGenreFeatureExtractor`. Both read and resample audio with `features.py` (soundfile/librosa).

    file / bytes / array at any rate -> mono float32 at config.sampling_rate
        -> clip_seconds windows -> raw features (n_windows, 59)                  (feature extractor)
        -> model(input_features): z-score with the config's stats -> logits (n_windows, G)
        -> softmax, mean over windows -> [{"label": genre, "score": p}, ...] best first

The normalisation stats stay in the model's `config.json` only (one source of truth): the feature
extractor returns raw features and the model always z-scores them itself, so
`model(**feature_extractor(y, sampling_rate=sr, return_tensors="pt"))`, the pipeline and
`model.predict_audio` give the same probabilities.
librosa and soundfile are needed only here, for audio: they are imported inside `features.py`'s
`try:` blocks, so loading the model from feature vectors never touches them.
"""

import os
import tempfile

import numpy as np
import torch
from transformers import Pipeline
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

try:
    from .features import CLIP_SECONDS, N_FEATURES, SAMPLE_RATE, as_mono_waveform, extract_song, load_audio, resample_audio
    from .frontend import window_patches
except ImportError:  # running from a checkout, not as a Hub dynamic module
    from features import CLIP_SECONDS, N_FEATURES, SAMPLE_RATE, as_mono_waveform, extract_song, load_audio, resample_audio
    from frontend import window_patches


class MusicGenreFeatureExtractor(FeatureExtractionMixin):
    r"""
    Turns a waveform into the model's input: raw (not z-scored) 59-dim feature vectors, one per
    `clip_seconds` window (`features.extract_song`), and, for a model with the musicnn front end,
    each window's log-mel patches (`frontend.window_patches`), which the model's front end embeds.

    Args:
        sampling_rate (`int`, *optional*, defaults to 22050):
            Rate the features are computed at; other rates are resampled to it.
        clip_seconds (`float`, *optional*, defaults to `features.CLIP_SECONDS` (5.0)):
            Window length; must match the model's `config.clip_seconds`.
        feature_size (`int`, *optional*, defaults to 59):
            Width of one feature vector.
        frontend (`str`, *optional*, defaults to `"none"`):
            The model's `config.frontend`; `"musicnn"` adds `log_mel` to the output.
    """

    model_input_names = ["input_features", "log_mel"]

    def __init__(self, sampling_rate=SAMPLE_RATE, clip_seconds=CLIP_SECONDS, feature_size=N_FEATURES,
                 frontend="none", **kwargs):
        super().__init__(**kwargs)
        self.sampling_rate = int(sampling_rate)
        self.clip_seconds = float(clip_seconds)
        self.feature_size = int(feature_size)
        if frontend not in ("none", "musicnn"):
            raise ValueError(f"frontend: expected 'none' or 'musicnn', got {frontend!r}")
        self.frontend = frontend

    @classmethod
    def for_config(cls, config):
        """The feature extractor that matches a model config (one place maps config fields to it)."""
        return cls(sampling_rate=config.sampling_rate, clip_seconds=config.clip_seconds,
                   feature_size=config.num_features, frontend=config.frontend)

    def __call__(self, audio, sampling_rate=None, return_tensors=None, **kwargs):
        """Model inputs of one waveform or of a list of waveforms.

        Args:
            audio (array, or a list of arrays): waveforms as `features.as_mono_waveform` accepts them:
                float in [-1, 1] or integer PCM, mono `(samples,)` or `(channels, samples)` /
                `(samples, channels)`. A list of numbers is one waveform; a list of arrays is many.
            sampling_rate (`int`, *optional*): their sample rate; `None` means `self.sampling_rate`.
                Any other rate is resampled (no torchaudio needed).
            return_tensors (`str`, *optional*): `"pt"` or `"np"`.

        Returns:
            `BatchFeature` with `input_features` of shape `(total_windows, feature_size)` (windows of
            every waveform, in order), `num_windows` (one count per waveform) and, with the musicnn
            front end, `log_mel` of shape `(total_windows, n_patches, 187, 96)`.
        """
        if kwargs:
            raise TypeError(f"feature extractor: unsupported argument(s) {sorted(kwargs)}; "
                            "expected audio, sampling_rate and return_tensors")
        waves = audio if isinstance(audio, (list, tuple)) and len(audio) and np.ndim(audio[0]) >= 1 else [audio]
        sr = self.sampling_rate if sampling_rate is None else int(sampling_rate)
        songs = [self._song(as_mono_waveform(w), sr) for w in waves]
        data = {"input_features": np.concatenate([s.features for s in songs]).astype(np.float32),
                "num_windows": np.asarray([len(s.features) for s in songs], dtype=np.int64)}
        if self.frontend == "musicnn":
            data["log_mel"] = np.stack([window_patches(w, self.sampling_rate) for s in songs for w in s.audio])
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _song(self, y, sr):
        y = resample_audio(y, sr, self.sampling_rate)
        return extract_song(y, sr=self.sampling_rate, clip_seconds=self.clip_seconds)

    def load(self, path):
        """Read an audio file (WAV, FLAC, OGG, MP3, ...) as mono float32 at `self.sampling_rate`."""
        return load_audio(path, sr=self.sampling_rate)


class MusicGenreClassificationPipeline(Pipeline):
    """Genre of a song: `[{"label": genre, "score": probability}, ...]`, best first.

    Inputs: a file path (WAV, FLAC, OGG, MP3: anything soundfile or librosa reads), the file's bytes,
    a 1-D waveform at the feature extractor's rate, or a dict `{"raw" or "array": waveform,
    "sampling_rate": rate}` at any rate. Songs of any length are cut into `clip_seconds` windows and
    the window probabilities averaged, as `model.predict_audio` does.

    Call options: `top_k` (default: every genre). Any other option is an error, as in transformers'
    own pipelines. One song at a time: `batch_size` > 1 is refused, because transformers' batching
    collates the *windows* of several songs and would hand one song's windows to another; the
    model is small, so batching gains little here (`classify.py` batches whole libraries).
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.model.config
        if self.feature_extractor is None:  # e.g. built by hand from a model object
            self.feature_extractor = MusicGenreFeatureExtractor.for_config(c)
        fe = self.feature_extractor
        for field in ("sampling_rate", "clip_seconds", "frontend"):
            if getattr(fe, field, None) != getattr(c, field):  # a mismatch would give confident nonsense
                raise ValueError(f"feature extractor {field}={getattr(fe, field, None)!r} does not match the model's "
                                 f"config.{field}={getattr(c, field)!r}")

    def _sanitize_parameters(self, top_k=None, **kwargs):
        if kwargs:
            raise TypeError(f"audio-classification pipeline: unsupported argument(s) {sorted(kwargs)}; "
                            "the only option is top_k")
        postprocess = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
                raise ValueError(f"top_k: expected a positive integer, got {top_k!r}")
            postprocess["top_k"] = int(top_k)
        return {}, {}, postprocess

    def __call__(self, inputs, *args, batch_size=None, **kwargs):
        size = batch_size if batch_size is not None else self._batch_size
        if size not in (None, 1):
            raise ValueError(f"batch_size: this pipeline takes one song at a time (batch_size=1), got {size!r}; "
                             "pass a list of songs without batch_size, or use classify.py for a library")
        return super().__call__(inputs, *args, **kwargs)

    def preprocess(self, inputs):
        y, sr = self._read(inputs)
        inputs = self.feature_extractor(y, sampling_rate=sr, return_tensors="pt")
        return {k: inputs[k] for k in ("input_features", "log_mel") if k in inputs}

    def _read(self, inputs):
        """(waveform, sample rate) from any accepted input."""
        fe = self.feature_extractor
        if isinstance(inputs, str) or isinstance(inputs, os.PathLike):
            return fe.load(inputs), fe.sampling_rate
        if isinstance(inputs, (bytes, bytearray)):
            return _load_bytes(bytes(inputs), fe.sampling_rate), fe.sampling_rate
        if isinstance(inputs, dict):
            key = "raw" if "raw" in inputs else "array" if "array" in inputs else None
            if key is None or inputs.get("sampling_rate") is None:
                raise ValueError(
                    "audio dict: expected keys 'raw' (or 'array') and 'sampling_rate', "
                    f"got {sorted(inputs)}"
                )
            return as_mono_waveform(inputs[key]), int(inputs["sampling_rate"])
        if isinstance(inputs, (np.ndarray, torch.Tensor, list, tuple)):
            return as_mono_waveform(inputs), fe.sampling_rate
        raise TypeError(
            "expected a file path, the file's bytes, a 1-D waveform or a dict with 'raw'/'array' and "
            f"'sampling_rate', got {type(inputs).__name__}"
        )

    def _forward(self, model_inputs):
        out = self.model(**model_inputs)
        return {"logits": out.logits, "gate_weights": out.gate_weights}

    def postprocess(self, model_outputs, top_k=None):
        probs = model_outputs["logits"].float().softmax(-1).mean(0)  # average over windows
        genres = [self.model.config.id2label[i] for i in range(probs.shape[-1])]
        k = len(genres) if top_k is None else max(1, min(top_k, len(genres)))
        scores, ids = probs.topk(k)
        return [{"label": genres[i], "score": s} for s, i in zip(scores.tolist(), ids.tolist())]


def _load_bytes(data, sr):
    """Decode an audio file held in memory through a temporary file (features.load_audio reads paths)."""
    fd, path = tempfile.mkstemp(prefix="genre-audio-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_audio(path, sr=sr)
    finally:
        os.unlink(path)


__all__ = ["MusicGenreFeatureExtractor", "MusicGenreClassificationPipeline"]
