"""Audio front end for the Hub: a feature extractor and an audio-classification pipeline.

`pipeline(model=repo_or_dir, trust_remote_code=True)("song.mp3")` must work with neither ffmpeg nor
torchaudio, which the stock "audio-classification" pipeline needs for files and for resampling. So
the exported `config.json` names this module's `MusicGenreClassificationPipeline` under
`custom_pipelines["audio-classification"]`, and `preprocessor_config.json` maps `AutoFeatureExtractor`
to `MusicGenreFeatureExtractor`. Both read and resample audio with `features.py` (soundfile/librosa).

    file / bytes / array at any rate -> song.song_waveform -> song.song_inputs (windows, features,
        front end) -> model.window_outputs -> song.song_verdict (the verdict predict_audio gives)
        -> [{"label": genre, "score": p}, ...] best first (an added genre included), or the whole
           verdict with `details=True` (front-end tags, windows, gate weights)

The normalisation stats stay in the model's `config.json` only (one source of truth): the feature
extractor returns raw features and the model always z-scores them itself, so
`model(**feature_extractor(y, sampling_rate=sr, return_tensors="pt"))`, the pipeline and
`model.predict_audio` give the same probabilities.
librosa and soundfile are needed only here, for audio: they are imported inside `features.py`'s
`try:` blocks, so loading the model from feature vectors never touches them.
"""

import os

import numpy as np
import torch
from transformers import Pipeline
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

try:
    from .features import CLIP_SECONDS, N_FEATURES, SAMPLE_RATE, as_mono_waveform, extract_song, load_audio, resample_audio
    from .modeling import WindowOutputs
    from .song import SongInputs, song_inputs, song_patches, song_verdict, song_waveform
except ImportError:  # running from a checkout, not as a Hub dynamic module
    from features import CLIP_SECONDS, N_FEATURES, SAMPLE_RATE, as_mono_waveform, extract_song, load_audio, resample_audio
    from modeling import WindowOutputs
    from song import SongInputs, song_inputs, song_patches, song_verdict, song_waveform


class MusicGenreFeatureExtractor(FeatureExtractionMixin):
    r"""
    Turns a waveform into the model's input: raw (not z-scored) 59-dim feature vectors, one per
    `clip_seconds` window (`features.extract_song`), and, for a model with the musicnn front end,
    each window's log-mel patches (`song.song_patches`), which the model's front end embeds.

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
        ys = [resample_audio(as_mono_waveform(w), sr, self.sampling_rate) for w in waves]
        songs = [extract_song(y, sr=self.sampling_rate, clip_seconds=self.clip_seconds) for y in ys]
        data = {"input_features": np.concatenate([s.features for s in songs]).astype(np.float32),
                "num_windows": np.asarray([len(s.features) for s in songs], dtype=np.int64)}
        if self.frontend == "musicnn":  # the patches song.song_inputs embeds
            data["log_mel"] = np.stack([p for y, s in zip(ys, songs)
                                        for p in song_patches(y, self.sampling_rate, s.starts, self.clip_seconds)])
        return BatchFeature(data=data, tensor_type=return_tensors)

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

    def _sanitize_parameters(self, top_k=None, details=None, **kwargs):
        if kwargs:
            raise TypeError(f"audio-classification pipeline: unsupported argument(s) {sorted(kwargs)}; "
                            "the options are top_k and details")
        postprocess = {}
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
                raise ValueError(f"top_k: expected a positive integer, got {top_k!r}")
            postprocess["top_k"] = int(top_k)
        if details is not None:
            if not isinstance(details, bool):
                raise ValueError(f"details: expected True or False, got {details!r}")
            postprocess["details"] = details
        return {}, {}, postprocess

    def __call__(self, inputs, *args, batch_size=None, **kwargs):
        size = batch_size if batch_size is not None else self._batch_size
        if size not in (None, 1):
            raise ValueError(f"batch_size: this pipeline takes one song at a time (batch_size=1), got {size!r}; "
                             "pass a list of songs without batch_size, or use classify.py for a library")
        return super().__call__(inputs, *args, **kwargs)

    def preprocess(self, inputs):
        audio, sr = self._read(inputs)
        c = self.model.config
        y = song_waveform(audio, sr, sr=c.sampling_rate)
        # Plain fields: the Pipeline moves tensors to the device and rebuilds tuples as plain tuples.
        return song_inputs(y, c.sampling_rate, c.clip_seconds, self.model.frontend)._asdict()

    def _read(self, inputs):
        """(file, bytes or waveform; its sample rate or None for files) from any accepted input."""
        if isinstance(inputs, (str, os.PathLike, bytes, bytearray)):
            return inputs, None
        if isinstance(inputs, dict):
            key = "raw" if "raw" in inputs else "array" if "array" in inputs else None
            if key is None or inputs.get("sampling_rate") is None:
                raise ValueError(
                    "audio dict: expected keys 'raw' (or 'array') and 'sampling_rate', "
                    f"got {sorted(inputs)}"
                )
            return inputs[key], inputs["sampling_rate"]
        if isinstance(inputs, (np.ndarray, torch.Tensor, list, tuple)):
            return inputs, self.feature_extractor.sampling_rate
        raise TypeError(
            "expected a file path, the file's bytes, a 1-D waveform or a dict with 'raw'/'array' and "
            f"'sampling_rate', got {type(inputs).__name__}"
        )

    def _forward(self, model_inputs):
        song = SongInputs(**model_inputs)
        return {"song": song._asdict(), "outputs": self.model.window_outputs(song.features)._asdict()}

    def postprocess(self, model_outputs, top_k=None, details=False):
        outputs = WindowOutputs(**model_outputs["outputs"])
        verdict = song_verdict(self.model, SongInputs(**model_outputs["song"]), outputs)
        if details:
            return verdict
        # An added genre named by its prototype is ranked by the prototype scores; a trained genre
        # by the classifier's probabilities (the verdict's own rule, so the first label is its genre).
        added = verdict["predicted_genre"] not in self.model.config.label2id
        scores = verdict["prototype_scores"] if added else verdict["probabilities"]
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        return [{"label": g, "score": s} for g, s in ranked[:top_k or len(ranked)]]


__all__ = ["MusicGenreFeatureExtractor", "MusicGenreClassificationPipeline"]
