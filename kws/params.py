"""The schema of params.yaml: every key of every block, with its type, what values it allows and
what it means. Each stage checks its blocks against it before doing anything (kws.io.params),
so a typo or a bad value stops the run with the dotted parameter name, the value given and what
is allowed, instead of a traceback deep in torch or a silently wrong run.

Adding a parameter: one line in SCHEMA (or in TRAINING, for a key of every training block)
beside its key in params.yaml. A key in one and not the other is refused when a stage reads the
block, and tests/test_params.py checks the two hold the same keys. A nested block (data.synthetic)
is a dict of its own lines.

Numbers may be written as strings: YAML 1.1 reads `1e-3` (no dot) as the string '1e-3', so
`lr: 1e-3` is converted, not refused. Choices are spelt here rather than imported from the
modules that use them, so that every stage does not depend on (and rerun for) all of kws/;
tests/test_params.py holds the two spellings together.
"""
import difflib
import math


class ParamError(ValueError):
    """params.yaml holds a value, a key or a block a stage cannot use."""


class Number:
    """A finite number in an interval written as in maths: "(0, 1]", "[0, inf)"."""
    integer = False

    def __init__(self, interval, meaning):
        self.interval, self.meaning = interval, meaning
        lo, hi = interval[1:-1].split(",")
        self.lo, self.hi = float(lo), float(hi)
        self.lo_open, self.hi_open = interval[0] == "(", interval[-1] == ")"

    @property
    def allowed(self):
        kind = "an integer" if self.integer else "a number"
        if self.hi == math.inf:
            return f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        return f"{kind} in {self.interval}"

    def convert(self, value):
        if isinstance(value, bool):  # YAML reads yes/no/on/off as booleans; bool is an int to Python
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        if self.integer:
            if value != int(value):
                return None
            value = int(value)
        elif isinstance(value, int):
            value = float(value)
        inside_lo = value > self.lo if self.lo_open else value >= self.lo
        inside_hi = value < self.hi if self.hi_open else value <= self.hi
        return value if inside_lo and inside_hi else None


class Integer(Number):
    integer = True


class Choice:
    def __init__(self, options, meaning):
        self.options, self.meaning = tuple(options), meaning
        self.allowed = "one of " + ", ".join(self.options)

    def convert(self, value):
        return value if value in self.options else None


class Text:
    """A string, e.g. a path; empty (or nothing after the colon) when `empty`."""

    def __init__(self, meaning, empty=True):
        self.meaning, self.empty = meaning, empty
        self.allowed = "a string" + (", or empty" if empty else " (not empty)")

    def convert(self, value):
        value = "" if value is None and self.empty else value
        return value if isinstance(value, str) and (value or self.empty) else None


class Flag:
    def __init__(self, meaning):
        self.meaning, self.allowed = meaning, "true or false"

    def convert(self, value):
        return value if isinstance(value, bool) else None


class ListOf:
    """A non-empty list whose items each pass `item` (and number `length` of them, when given)."""

    def __init__(self, item, meaning, length=None):
        self.item, self.meaning, self.length = item, meaning, length
        self.allowed = f"a list of {length or 'one or more'} items, each {item.allowed}"

    def convert(self, value):
        if not isinstance(value, list) or not value or (self.length and len(value) != self.length):
            return None
        items = [self.item.convert(v) for v in value]
        return None if any(v is None for v in items) else items


PERCENT = "[0, 100]"
SHARE = "[0, 1]"

# The shared training loop's keys (kws.train.fit), in every block that trains a model.
TRAINING = {
    "optimizer": Choice(["sgd", "adamw"], "SGD with Nesterov momentum, or AdamW"),
    "momentum": Number("[0, 1)", "SGD momentum (unused by AdamW)"),
    "lr": Number("(0, 10]", "peak learning rate (above 10 is a typo, not a recipe)"),
    "warmup_epochs": Integer("[0, inf)", "epochs of linear warm-up before the cosine decay"),
    "epochs": Integer("[1, inf)", "training epochs"),
    "batch_size": Integer("[1, inf)", "clips per step"),
    "weight_decay": Number("[0, inf)", "decoupled (AdamW) or L2 (SGD) weight decay"),
    "seed": Integer("[0, inf)", "seed of initialization, shuffling and augmentation"),
    "device": Choice(["auto", "cpu", "cuda"], "where to train (auto: cuda when torch sees a GPU)"),
}
# Which weights a training stage keeps (kws.train.fit); QAT keeps its best epoch (fake-quant graphs
# carry no BatchNorm modules whose statistics could be re-estimated).
AVERAGE = {"average_share": Number(SHARE, "share of the last epochs whose mean weights are kept (0: the best validation epoch)")}
STUDENTS = ["tc_resnet8", "tc_resnet14", "bc_resnet"]  # kws.models.preset

SCHEMA = {
    "data": {
        "source": Choice(["synthetic", "folder", "speech_commands"], "where the clips come from"),
        "root": Text("folder: a Speech Commands folder; speech_commands: an already downloaded copy"),
        "noise_root": Text("a folder with _background_noise_/ (empty: the corpus's own)"),
        "extra_train_root": Text("real source: a second Speech Commands folder whose clips all go to train"),
        "cache": Text("downloads and the synthetic corpus", empty=False),
        "val_percent": Number(PERCENT, "speaker-hash share of validation speakers"),
        "test_percent": Number("(0, 100]", "speaker-hash share of test speakers"),
        "fold": Integer("[0, inf)", "speaker k-fold: the test share moved by fold * test_percent"),
        "silence_percent": Number("[0, inf)", "silence clips per 100 keyword clips of each split"),
        "unknown_percent": Number("[0, inf)", "unknown-word clips per 100 keyword clips of each split"),
        "max_bad_percent": Number(PERCENT, "refuse the data set above this share of unreadable clips"),
        "seed": Integer("[0, inf)", "seed of the label sampling and silence cuts"),
        "mix_synthetic_speakers": Integer("[0, inf)", "synthetic speakers added to a real train split"),
        "synthetic": {
            "speakers": Integer("[3, inf)", "espeak-ng speakers (one per split at least)"),
            "other_words": Integer("[0, inf)", "non-keywords each speaker says"),
        },
    },
    "features": {
        "kind": Choice(["logmel", "mfcc"], "front end"),
        "n_mels": Integer("[1, inf)", "mel bands"),
        "n_mfcc": Integer("[1, inf)", "cepstral coefficients kept (mfcc)"),
        "win_ms": Number("(0, inf)", "analysis window, ms"),
        "hop_ms": Number("(0, inf)", "frame hop, ms"),
        "n_fft": Integer("[1, inf)", "FFT size, samples"),
        "f_min": Number("[0, inf)", "lowest mel filter edge, Hz"),
        "f_max": Number("(0, inf)", "highest mel filter edge, Hz"),
        "calib_clips": Integer("[1, inf)", "train clips kept for post-training quantization"),
    },
    "augment": {
        "time_shift_ms": Number("[0, inf)", "largest random time shift, ms"),
        "noise_prob": Number(SHARE, "share of clips mixed with background noise"),
        "noise_volume": Number("[0, inf)", "largest noise amplitude"),
        "freq_masks": Integer("[0, inf)", "SpecAugment frequency masks"),
        "freq_mask_width": Integer("[0, inf)", "widest frequency mask, bins"),
        "time_masks": Integer("[0, inf)", "SpecAugment time masks"),
        "time_mask_width": Integer("[0, inf)", "widest time mask, frames"),
        "tempo": Number("[0, 0.5]", "largest relative change of speaking rate (0: off)"),
        "freq_warp": Number("[0, 0.5]", "largest relative frequency warp, vocal tract length (0: off)"),
        "gain_db": Number("[0, 40]", "largest speech level change before noise is added, dB (0: off)"),
    },
    "teacher": {
        "checkpoint": Text("a trained model to adopt instead of training one (empty: train)"),
        "model": Choice(STUDENTS, "architecture"),
        "width": Number("(0, inf)", "channel multiplier"),
        **TRAINING,
        **AVERAGE,
        "pretrain_epochs": Integer("[0, inf)", "epochs on the mixed-in espeak-ng clips before recorded speech"),
    },
    "prune": {
        "ratio": Number("(0, 0.9]", "channels removed at the narrow pruned model"),
        "wide_ratio": Number("[0, 0.9]", "channels removed at the wide pruned model (0: halfway to ratio)"),
        "importance": Choice(["l1", "l2", "bn_scale", "taylor"], "channel importance criterion"),
        "steps": Integer("[1, inf)", "iterative pruning steps"),
    },
    "finetune": {
        "alpha": Number(SHARE, "weight of the teacher's soft targets (0: labels only)"),
        "temperature": Number("(0, inf)", "softmax temperature of the soft targets"),
        **TRAINING,
        **AVERAGE,
    },
    "distill": {
        "student": Choice(STUDENTS, "student architecture"),
        "width": Number("(0, inf)", "student channel multiplier"),
        "budget_bytes": Integer("[1, inf)", "flash budget: the INT8 .tflite, bytes"),
        "arena_budget_bytes": Integer("[1, inf)", "RAM budget: the TFLM tensor arena, bytes"),
        "teachers": Choice(["ensemble", "chain"], "which models teach the student"),
        "teacher_replicas": Integer("[0, inf)", "more teachers of the teacher's recipe and other seeds in the ensemble"),
        "alpha": Number(SHARE, "weight of the soft (teacher) term"),
        "temperature": Number("(0, inf)", "softmax temperature of the soft targets"),
        "feature_weight": Number("[0, inf)", "FitNet hint loss weight (0: off)"),
        "mixup": Number("[0, inf)", "mixup strength a, lam ~ Beta(a, a) (0: off)"),
        **TRAINING,
        **AVERAGE,
    },
    "qat": {
        **TRAINING,
        "min_parity": Number(SHARE, "least top-1 agreement of onnxruntime INT8 with torch on test clips"),
    },
    "quantize": {
        "method": Choice(["minmax", "percentile", "entropy"], "activation calibration"),
        "calib_clips": Integer("[1, inf)", "calibration clips (at most features.calib_clips)"),
        "per_channel": Flag("int8 weights per output channel"),
        "equalize": Flag("exact cross-layer rescaling of TC-ResNet conv pairs before quantizing"),
        "max_int8_loss": Number(SHARE, "validation top-1 INT8 may lose before activations go to 16 bits"),
        "activations": Choice(["auto", "int8", "16x8"], "activation precision (auto: int8, 16x8 past max_int8_loss)"),
        "sensitivity": Flag("per-layer sensitivity table for each PTQ model"),
        "sweep_methods": ListOf(Choice(["minmax", "percentile", "entropy"], ""), "calibration sweep methods"),
        "sweep_calib_clips": ListOf(Integer("[1, inf)", ""), "calibration sweep clip counts"),
    },
    "evaluate": {
        "max_frr": Number("(0, 1)", "miss budget at which the false-accept rate is reported"),
    },
    "firmware": {
        "min_parity": Number(SHARE, "least top-1 agreement of each .tflite with its references"),
        "probe_clips": Integer("[1, inf)", "test clips the smallest tensor arena must run bit-exactly"),
    },
    "package": {
        "golden_clips": Integer("[1, inf)", "real test clips with expected features and outputs"),
    },
    "stream": {
        "hop_ms": Number("(0, 1000]", "a 1-s window scored every hop (a multiple of features.hop_ms)"),
        "smooth_windows": Integer("[1, inf)", "windows the posteriors are averaged over"),
        "refractory_s": Number("[0, inf)", "quiet time of a keyword after it fires, s"),
        "minutes": {"val": Number("(0, inf)", "validation stream length, min"),
                    "test": Number("(0, inf)", "test stream length, min")},
        "snr_db": ListOf(Number("[-inf, inf]", ""), "speech level over the background noise, dB"),
        "gap_s": ListOf(Number("[0, inf)", ""), "noise between words: uniform in [low, high] s", length=2),
        "keyword_share": Number("(0, 1]", "share of the words that are keywords"),
        "target_fa_per_hour": Number("(0, inf)", "validation false accepts per hour the thresholds are chosen for"),
        "seed": Integer("[0, inf)", "seed of the streams"),
    },
}


def _problems(values, schema, prefix):
    """(checked values, [problem lines]) of one block against its schema."""
    if not isinstance(values, dict):
        return values, [f"{prefix}: expected a block of keys ({', '.join(schema)}), got {values!r}"]
    out, problems = {}, []
    for key, value in values.items():
        rule = schema.get(key)
        if rule is None:
            near = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"; did you mean {prefix}.{near[0]}?" if near else f"; known: {', '.join(schema)}"
            problems.append(f"{prefix}.{key}: unknown parameter{hint}")
        elif isinstance(rule, dict):
            out[key], more = _problems(value, rule, f"{prefix}.{key}")
            problems += more
        else:
            out[key] = rule.convert(value)
            if out[key] is None:
                problems.append(f"{prefix}.{key} = {value!r}: expected {rule.allowed} ({rule.meaning})")
    for key in schema.keys() - values.keys():
        rule = schema[key]
        what = "a block" if isinstance(rule, dict) else f"{rule.allowed} ({rule.meaning})"
        problems.append(f"{prefix}.{key}: missing; expected {what}")
    return out, problems


def check(all_params, block, source="params.yaml"):
    """The `block` of `all_params` (params.yaml, parsed) with every value checked against SCHEMA
    and numbers written as strings converted. Raises ParamError naming each bad, unknown or
    missing key (dotted), the value given and what is allowed."""
    if not isinstance(all_params, dict):
        raise ParamError(f"{source}: expected blocks of parameters, got {type(all_params).__name__}")
    unknown = [b for b in all_params if b not in SCHEMA]
    problems = []
    for b in unknown:
        near = difflib.get_close_matches(str(b), list(SCHEMA), n=1)
        problems.append(f"{b}: unknown block" + (f"; did you mean {near[0]}?" if near else ""))
    if block not in all_params:
        problems.append(f"{block}: block missing; expected keys {', '.join(SCHEMA[block])}")
        values = {}
    else:
        values, more = _problems(all_params[block], SCHEMA[block], block)
        problems += more
    if problems:
        raise ParamError(f"{source}: {len(problems)} problem(s) with the parameters:\n  " + "\n  ".join(problems))
    return values
