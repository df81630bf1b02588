"""Offline synthetic corpus in the Google Speech Commands (GSC v0.02) full data-set layout.

Words are spoken by espeak-ng, a real (formant) speech synthesizer: the PyPI package
`espeakng_loader` ships libespeak-ng and its data, driven here through ctypes; Debian's
`espeak-ng` command is the fallback. A "speaker" is one (voice, variant, rate, pitch, pitch range)
combination, named by 8 hex digits like GSC's speaker hashes, so a speaker-hash split of this
corpus is speaker-disjoint exactly as it is for the real one.

Layout written (no validation/testing lists: the loader then splits by speaker hash):
    out_dir/<word>/<speaker>_nohash_<n>.wav       16 kHz mono int16, exactly 1 s
    out_dir/_background_noise_/<kind>.wav         ~60 s synthetic noise recordings
    out_dir/SOURCE.txt                            what this is and how it was made (written last)

Determinism: libespeak-ng keeps hidden static state between utterances (pitch-flutter phase and
wave-generator counters, never reset, not even by espeak_Initialize), so a clip would depend on
whatever the process spoke before. Every speaker is therefore rendered in a fresh worker process
forked from this (never-speaking) one, in a fixed word order, with espeak's noise generator
seeded per utterance: the same arguments give byte-identical wavs for any number of workers.
"""
import argparse
import ctypes
import hashlib
import multiprocessing
import shutil
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.signal import firwin, resample_poly

from kws.audio import read_raw, write_clip
from kws.sources import KEYWORDS

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
ESPEAK_RATE = 22050  # espeak-ng's native output rate
_UP, _DOWN = SAMPLE_RATE // 50, ESPEAK_RATE // 50  # 320/441
# resample_poly's own default low-pass, designed once: redesigning it per call cost ~1/3 of a clip.
_RESAMPLE_FILTER = firwin(2 * 10 * _DOWN + 1, 1 / _DOWN, window=("kaiser", 5.0))
GSC_WORDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
)
# The English voices (accents) shipped in espeak-ng-data/lang/gmw, in espeak-ng 1.51 and 1.52.
VOICES = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-us-nyc",
)
# Human-sounding variants from espeak-ng-data/voices/!v ("" = the voice's own); the robot, echo
# and joke variants are left out. All exist in espeak-ng 1.51 (Debian 12) and 1.52 (PyPI).
VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "Alex", "Andy", "Annie", "Denis", "Gene", "Jacky",
    "Mike", "Nguyen", "adam", "anika", "antonio", "aunty", "belinda", "benjamin", "david", "ed",
    "edward", "grandma", "grandpa", "iven", "linda", "marcelo", "michel", "paul", "quincy", "rob",
    "robert", "steph", "travis", "victor", "whisper", "whisperf",
)
RATE_WPM = (120, 220)        # espeak default 175; at 120 the longest words still fit 1 s
PITCH = (20, 80)             # espeak 0..100, default 50
PITCH_RANGE = (15, 90)       # espeak 0..100, default 50 (0 = monotone)
PEAK_DBFS = (-26.0, -1.0)    # per-clip loudness, like GSC's very uneven recording levels
FLOOR_DBFS = (-78.0, -58.0)  # faint noise floor: real recordings are never digital silence
NOISE_PEAK = 0.5
BABBLE_TALKERS = 6
BABBLE_SENTENCES = (
    "I think we should leave a little earlier tomorrow morning.",
    "Did you remember to buy milk on the way home?",
    "The meeting was moved to half past three on Thursday.",
    "She said the train was running about ten minutes late.",
    "Could you pass me the salt and the pepper, please?",
    "We watched a really strange film last weekend.",
    "My brother is coming to visit us in the spring.",
    "Honestly, I have no idea where I put my keys.",
    "The weather has been lovely for most of the week.",
    "Let me know when you are ready and we can start.",
)
ESPEAK_COMMAND = "espeak-ng"
INSTALL_HINT = "pip install espeakng-loader (preferred) or apt-get install espeak-ng"

# libespeak-ng constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)


class Speaker(NamedTuple):
    voice: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int

    @property
    def voice_name(self):
        """espeak voice name, variant appended the way espeak expects (`en-us+f3`)."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice

    @property
    def id(self):
        """8 hex digits from the whole combination, like GSC's speaker hashes."""
        key = f"{self.voice_name}|{self.rate}|{self.pitch}|{self.pitch_range}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]


def make_speakers(n, seed=0):
    """n distinct speakers, drawn from `seed`; the first k are the same for any n >= k."""
    return _draw_speakers(np.random.default_rng([seed, 0]), n)


def _draw_speakers(rng, n):
    speakers, ids = [], set()
    while len(speakers) < n:
        s = Speaker(str(rng.choice(VOICES)), str(rng.choice(VARIANTS)),
                    int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
                    int(rng.integers(PITCH[0], PITCH[1] + 1)),
                    int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)))
        if s.id not in ids:  # a repeated combination (or id) would merge two "speakers"
            ids.add(s.id)
            speakers.append(s)
    return speakers


# ---------------------------------------------------------------- synthesizer backends

def _load_library():
    """(ctypes lib, data path) of espeakng_loader's libespeak-ng; raises if it is not usable."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    data = espeakng_loader.get_data_path()
    missing = [v for v in VARIANTS if v and not (Path(data) / "voices" / "!v" / v).is_file()]
    if missing:  # espeak silently falls back to the plain voice for an unknown variant
        raise OSError(f"espeak-ng data {data} lacks voice variants {missing}")
    return lib, data


def _command_variants():
    """Variant names the espeak-ng command knows (its `--voices=variant` File column is `!v/<name>`)."""
    listing = subprocess.run([ESPEAK_COMMAND, "--voices=variant"], capture_output=True, text=True,
                             check=True).stdout
    return {line.split()[4].removeprefix("!v/") for line in listing.splitlines()[1:] if line.strip()}


def pick_backend():
    """'library' (libespeak-ng from espeakng_loader) or 'command' (espeak-ng on PATH)."""
    try:
        _load_library()
        return "library"
    except (ImportError, OSError, RuntimeError) as err:  # RuntimeError: loader without its data
        library_error = err
    if not shutil.which(ESPEAK_COMMAND):
        raise RuntimeError(
            f"kws.synth: no espeak-ng speech synthesizer found (library: {library_error}; "
            f"no '{ESPEAK_COMMAND}' command on PATH). Install one: {INSTALL_HINT}")
    missing = [v for v in VARIANTS if v and v not in _command_variants()]
    if missing:
        raise RuntimeError(f"kws.synth: '{ESPEAK_COMMAND} --voices=variant' lacks variants {missing} "
                           f"and the library failed ({library_error}). Install: {INSTALL_HINT}")
    return "command"


class _LibEspeak:
    """libespeak-ng in synchronous mode: espeak_Synth returns once the callback got all samples."""

    def __init__(self):
        lib, data = _load_library()
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_DONT_EXIT)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"kws.synth: espeak_Initialize(data={data}) returned {rate}, "
                               f"expected sample rate {ESPEAK_RATE}")
        self._lib, self._chunks = lib, []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: espeak holds a raw pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n_samples, _events):
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        return 0  # 0 = keep synthesizing

    def synth(self, text, speaker, rand_seed):
        """int16 samples at ESPEAK_RATE."""
        lib = self._lib
        self._check(lib.espeak_SetVoiceByName(speaker.voice_name.encode()), "SetVoiceByName", speaker)
        for param, value in ((_PARAM_RATE, speaker.rate), (_PARAM_PITCH, speaker.pitch),
                             (_PARAM_RANGE, speaker.pitch_range)):
            self._check(lib.espeak_SetParameter(param, value, 0), "SetParameter", speaker)
        lib.espeak_ng_SetRandSeed(rand_seed)  # espeak's noise sources (breath, frication)
        self._chunks = []
        text = text.encode()
        self._check(lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                     None, None), "Synth", speaker)
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

    @staticmethod
    def _check(status, call, speaker):
        if status != 0:
            raise RuntimeError(f"kws.synth: espeak_{call} failed with status {status} for {speaker}")


class _CommandEspeak:
    """The espeak-ng command, one process per utterance (so no hidden state and no seed needed).

    The command has no pitch-range option, so speakers keep their voice's own range here."""

    def synth(self, text, speaker, _rand_seed):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "utterance.wav"
            subprocess.run([ESPEAK_COMMAND, "-v", speaker.voice_name, "-s", str(speaker.rate),
                            "-p", str(speaker.pitch), "-w", str(path), "--", text],
                           check=True, capture_output=True)
            samples, rate = read_raw(path)
            if samples.shape[1] != 1:
                raise RuntimeError(f"kws.synth: {ESPEAK_COMMAND} wrote {samples.shape[1]} channels, expected mono")
            samples = samples[:, 0]
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"kws.synth: {ESPEAK_COMMAND} wrote {rate} Hz, expected {ESPEAK_RATE}")
        return samples


def _open_engine(backend):
    return _LibEspeak() if backend == "library" else _CommandEspeak()


def _speak(engine, text, speaker, rand_seed):
    """Speech as float64 at SAMPLE_RATE, leading/trailing silence trimmed."""
    audio = engine.synth(text, speaker, rand_seed).astype(np.float64) / 32768.0
    audio = resample_poly(audio, _UP, _DOWN, window=_RESAMPLE_FILTER)
    return _trim(audio)


def _trim(audio, rel_threshold=0.01, margin=160):
    loud = np.flatnonzero(np.abs(audio) > rel_threshold * np.abs(audio).max(initial=0.0))
    if loud.size == 0:
        return audio[:0]
    return audio[max(loud[0] - margin, 0):loud[-1] + margin + 1]


# ---------------------------------------------------------------- clips

def _clip_rng(seed, speaker, word, n):
    # Keyed by names, not positions, so a clip does not depend on the word list or speaker count.
    return np.random.default_rng([seed, int(speaker.id, 16), zlib.crc32(word.encode()), n])


def _place(speech, rng):
    """A 1 s clip: speech at a random offset and loudness over a faint noise floor."""
    speech = speech[:CLIP_SAMPLES]  # safety only: RATE_WPM keeps every word under 1 s
    peak = np.abs(speech).max(initial=0.0)
    if peak == 0:
        raise RuntimeError("kws.synth: the synthesizer returned silence")
    speech = speech * (10 ** (rng.uniform(*PEAK_DBFS) / 20) / peak)
    clip = rng.standard_normal(CLIP_SAMPLES) * 10 ** (rng.uniform(*FLOOR_DBFS) / 20)
    start = int(rng.integers(0, CLIP_SAMPLES - len(speech) + 1))
    clip[start:start + len(speech)] += speech
    return clip


def _render_speaker(task):
    """Worker: every clip of one speaker, in a fixed order. Returns how many clips it wrote."""
    out_dir, backend, speaker, words, clips_per_word, seed = task
    engine = _open_engine(backend)
    for word in words:
        for n in range(clips_per_word):
            rng = _clip_rng(seed, speaker, word, n)
            # A person never says a word twice the same way: jitter rate and pitch per repetition.
            said = speaker._replace(rate=int(round(speaker.rate * rng.uniform(0.94, 1.06))),
                                    pitch=int(np.clip(speaker.pitch + rng.integers(-4, 5), 0, 100)))
            speech = _speak(engine, word, said, int(rng.integers(2 ** 31)))
            _write_wav(Path(out_dir) / word / f"{speaker.id}_nohash_{n}.wav", _place(speech, rng))
    return len(words) * clips_per_word


# ---------------------------------------------------------------- background noise

def _colored_noise(rng, n, exponent):
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), flat below 20 Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
    return np.fft.irfft(spectrum * freqs ** (-exponent / 2), n)


def _mains_hum(rng, n):
    """50 or 60 Hz hum with decaying harmonics and a little hiss, like a grounding fault."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.choice([50.0, 60.0])
    hum = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    return hum + 0.01 * rng.standard_normal(n)


def _render_babble(task):
    """Worker: several talkers, each a stream of sentences with short pauses, all overlapped."""
    backend, seed, n = task
    rng = np.random.default_rng([seed, 1])
    engine = _open_engine(backend)
    mix = np.zeros(n)
    for talker in _draw_speakers(rng, BABBLE_TALKERS):
        said = [_speak(engine, s, talker, int(rng.integers(2 ** 31))) for s in BABBLE_SENTENCES]
        pos = int(rng.integers(0, SAMPLE_RATE))
        while pos < n:
            speech = said[rng.integers(len(said))][:n - pos]
            mix[pos:pos + len(speech)] += speech * rng.uniform(0.3, 1.0)
            pos += len(speech) + int(rng.uniform(0.1, 0.8) * SAMPLE_RATE)
    return mix


def _write_noise(path, audio):
    _write_wav(path, audio * (NOISE_PEAK / np.abs(audio).max()))


# ---------------------------------------------------------------- files

def _write_wav(path, audio):
    """float audio (full scale 1.0) -> 16 kHz mono int16 wav."""
    write_clip(path, np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16), SAMPLE_RATE)


def _write_source(out_dir, summary):
    s = summary
    Path(out_dir, "SOURCE.txt").write_text(f"""\
SYNTHETIC data: no recording of a person is in here.

Shaped like Google Speech Commands v0.02 (full data-set layout, no validation/testing lists).
Written by kws/synth.py synthesize_corpus(): {s['n_clips']} clips = {s['n_speakers']} speakers
x {len(s['words'])} words x {s['clips_per_speaker_word']} clip(s), seed {s['seed']}.

Speech: the espeak-ng formant synthesizer ({s['backend']} backend), 22050 Hz resampled to 16 kHz.
A speaker is one espeak (voice, variant, rate, pitch, pitch range) combination; its file prefix
is the first 8 hex digits of the SHA-1 of that combination. Each 1 s clip holds the word at a
random offset and loudness over a faint white noise floor; repetitions jitter rate and pitch.
_background_noise_: synthetic white, pink and brown noise, mains hum, and babble made of
overlapping synthesized sentences.
""")


# ---------------------------------------------------------------- main entry

def speaker_words(speaker, words, other_words, seed):
    """Every keyword, plus `other_words` of the rest drawn per speaker (None: all words). Only
    ~10% of a 12-class set is "unknown", so saying all 25 fillers would mostly be wasted time."""
    if other_words is None:
        return tuple(words)
    keywords = [w for w in words if w in KEYWORDS]
    others = [w for w in words if w not in KEYWORDS]
    rng = np.random.default_rng([seed, int(speaker.id, 16)])
    picked = rng.choice(len(others), size=min(other_words, len(others)), replace=False)
    return tuple(keywords + [others[i] for i in sorted(picked)])


def synthesize_corpus(out_dir, n_speakers, clips_per_speaker_word=1, seed=0, words=GSC_WORDS,
                      progress=True, workers=2, noise_seconds=60.0, other_words=None):
    """Write the corpus (see module docstring) into a new or empty `out_dir`; returns a summary."""
    out_dir = Path(out_dir)
    if n_speakers < 1 or clips_per_speaker_word < 1 or workers < 1 or noise_seconds <= 0:
        raise ValueError("kws.synth: need n_speakers >= 1, clips_per_speaker_word >= 1, "
                         "workers >= 1 and noise_seconds > 0")
    if not words or len(set(words)) != len(words):
        raise ValueError(f"kws.synth: words must be non-empty and distinct, got {words!r}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"kws.synth: out_dir {out_dir} is not empty; remove it first "
                              "(clips left from another run would mix with the new ones)")
    backend = pick_backend()
    speakers = make_speakers(n_speakers, seed)
    for word in words:
        (out_dir / word).mkdir(parents=True, exist_ok=True)
    noise_dir = out_dir / "_background_noise_"
    noise_dir.mkdir()
    n_noise = int(noise_seconds * SAMPLE_RATE)
    tasks = [(str(out_dir), backend, s, speaker_words(s, words, other_words, seed), clips_per_speaker_word, seed)
             for s in speakers]
    n_clips = sum(len(t[3]) for t in tasks) * clips_per_speaker_word

    start = time.perf_counter()
    # fork: children start with this process's never-used espeak state (see module docstring);
    # maxtasksperchild=1: a fresh child per speaker.
    with multiprocessing.get_context("fork").Pool(workers, maxtasksperchild=1) as pool:
        babble = pool.apply_async(_render_babble, ((backend, seed, n_noise),))
        done, next_report = 0, 0.1
        for count in pool.imap_unordered(_render_speaker, tasks):
            done += count
            if progress and (done / n_clips >= next_report or done == n_clips):
                rate = done / (time.perf_counter() - start)
                print(f"synth: {done}/{n_clips} clips ({100 * done / n_clips:.0f}%), {rate:.0f} clips/s",
                      flush=True)
                next_report = done / n_clips + 0.1
        clip_seconds = time.perf_counter() - start
        rng = np.random.default_rng([seed, 2])
        _write_noise(noise_dir / "white_noise.wav", _colored_noise(rng, n_noise, 0))
        _write_noise(noise_dir / "pink_noise.wav", _colored_noise(rng, n_noise, 1))
        _write_noise(noise_dir / "brown_noise.wav", _colored_noise(rng, n_noise, 2))
        _write_noise(noise_dir / "mains_hum.wav", _mains_hum(rng, n_noise))
        _write_noise(noise_dir / "babble.wav", babble.get())

    summary = {
        "out_dir": str(out_dir), "backend": backend, "seed": seed, "n_speakers": n_speakers,
        "words": list(words), "clips_per_speaker_word": clips_per_speaker_word, "n_clips": n_clips,
        "speakers": [s.id for s in speakers], "workers": workers,
        "noise_files": sorted(p.name for p in noise_dir.iterdir()),
        "clip_seconds": round(clip_seconds, 3), "clips_per_s": round(n_clips / clip_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 3),
    }
    _write_source(out_dir, summary)
    if progress:
        print(f"synth: {n_clips} clips in {clip_seconds:.1f} s = {summary['clips_per_s']} clips/s "
              f"({workers} worker(s), {backend}); total {summary['total_seconds']} s", flush=True)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a synthetic GSC-shaped corpus (and time it).")
    parser.add_argument("out_dir")
    parser.add_argument("--speakers", type=int, default=50)
    parser.add_argument("--clips", type=int, default=1, help="clips per speaker and word")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noise-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    synthesize_corpus(args.out_dir, args.speakers, args.clips, args.seed, workers=args.workers,
                      noise_seconds=args.noise_seconds)


if __name__ == "__main__":
    main()
