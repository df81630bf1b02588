"""params.yaml is checked against kws.params.SCHEMA at the start of every stage: bad values,
unknown and missing keys stop the real stage scripts with the dotted name, the value and what is
allowed; numbers written as strings are converted."""
import copy
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kws import data_source, features, models, prune, train
from kws.params import SCHEMA, TRAINING, ParamError, check

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def set_param(text, block, key, raw):
    """params.yaml text with `block.key` written as `raw`, verbatim (so `1e-3` stays unquoted YAML)."""
    span = re.search(rf"^{block}:\n(?:[ #].*\n|\n)*", text, re.M)
    body, n = re.subn(rf"^  {key}:.*$", f"  {key}: {raw}", span.group(), count=1, flags=re.M)
    assert n == 1, f"{block}.{key} not in params.yaml"
    return text[:span.start()] + body + text[span.end():]


def run_stage(work, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "stages" / args[0]), *args[1:]], cwd=work, env=env,
                          capture_output=True, text=True)


def flat(tree, prefix=""):
    keys = set()
    for k, v in tree.items():
        keys |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return keys


def test_schema_covers_exactly_the_keys_of_params_yaml():
    assert flat(SCHEMA) == flat(PARAMS)
    for block in SCHEMA:
        check(PARAMS, block)  # the repository's own params pass


def test_schema_choices_are_the_codes():
    assert SCHEMA["data"]["source"].options == data_source.SOURCES
    assert SCHEMA["features"]["kind"].options == features.KINDS
    assert set(SCHEMA["prune"]["importance"].options) == set(prune.IMPORTANCE)
    assert SCHEMA["prune"]["ratio"].hi == prune.MAX_RATIO
    distill_stage = runpy.run_path(str(ROOT / "stages" / "distill.py"))
    assert set(SCHEMA["distill"]["teachers"].options) == set(distill_stage["TEACHERS"])
    for name in SCHEMA["distill"]["student"].options:
        models.preset(name, 1.0, 40, 12)
    for device in TRAINING["device"].options:
        if device != "cuda":
            train.resolve_device(device)
    for opt in TRAINING["optimizer"].options:
        train.make_optimizer([torch.nn.Parameter(torch.zeros(1))], {**PARAMS["teacher"], "optimizer": opt})


def test_numbers_written_as_strings_are_converted():
    p = copy.deepcopy(PARAMS)
    p["teacher"].update(lr="1e-3", batch_size="64", epochs=3.0, checkpoint=None)
    got = check(p, "teacher")
    assert got["lr"] == 0.001 and isinstance(got["lr"], float)
    assert got["batch_size"] == 64 and got["epochs"] == 3 and isinstance(got["epochs"], int)
    assert got["checkpoint"] == ""  # `checkpoint:` with nothing after it


@pytest.mark.parametrize("key,value,allowed", [
    ("epochs", True, "an integer >= 1"),          # YAML's `yes`
    ("epochs", 2.5, "an integer >= 1"),
    ("lr", "1e3", r"a number in \(0, 10\]"),      # a slip of the minus sign
    ("lr", float("nan"), r"a number in \(0, 10\]"),
    ("optimizer", "adam", "one of sgd, adamw"),
])
def test_bad_values_are_named_with_what_is_allowed(key, value, allowed):
    p = copy.deepcopy(PARAMS)
    p["teacher"][key] = value
    with pytest.raises(ParamError, match=rf"teacher\.{key} = .*: expected {allowed} \("):
        check(p, "teacher")


def test_unknown_blocks_and_keys_get_a_suggestion_and_missing_keys_are_named():
    p = copy.deepcopy(PARAMS)
    p["teachr"] = p["teacher"]
    p["data"]["synthetic"]["speakrs"] = p["data"]["synthetic"].pop("speakers")
    with pytest.raises(ParamError) as e:
        check(p, "data")
    msg = str(e.value)
    assert "teachr: unknown block; did you mean teacher?" in msg
    assert "data.synthetic.speakrs: unknown parameter; did you mean data.synthetic.speakers?" in msg
    assert "data.synthetic.speakers: missing; expected an integer >= 3" in msg
    del p["evaluate"]
    with pytest.raises(ParamError, match="evaluate: block missing; expected keys max_frr"):
        check(p, "evaluate")


# The examples, through the real stage scripts in an empty workspace: each must stop at
# its parameters with a clear message, before it reads any data.
@pytest.mark.parametrize("stage,block,key,raw,message", [
    (["prune.py", "wide"], "prune", "ratio", "abc", r"prune.ratio = 'abc': expected a number in (0, 0.9]"),
    (["distill.py", "kd"], "distill", "budget_bytes", "50KB",
     "distill.budget_bytes = '50KB': expected an integer >= 1 (flash budget"),
    (["distill.py", "kd"], "distill", "mixup", "-0.4", "distill.mixup = -0.4: expected a number >= 0 (mixup strength"),
    (["teacher.py"], "teacher", "batch_size", "0", "teacher.batch_size = 0: expected an integer >= 1"),
    (["teacher.py"], "teacher", "epochs", "0", "teacher.epochs = 0: expected an integer >= 1"),
    (["finetune.py", "wide"], "augment", "noise_prob", "1.5", "augment.noise_prob = 1.5: expected a number in [0, 1]"),
    (["summary.py"], "evaluate", "max_frr", "0", "evaluate.max_frr = 0: expected a number in (0, 1)"),
])
def test_stages_refuse_bad_values_before_any_work(tmp_path, stage, block, key, raw, message):
    (tmp_path / "params.yaml").write_text(set_param((ROOT / "params.yaml").read_text(), block, key, raw))
    out = run_stage(tmp_path, *stage)
    assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]
    assert "FileNotFoundError" not in out.stderr and not (tmp_path / "metrics").exists()


def test_a_stage_refuses_a_misspelt_key_with_a_suggestion(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(re.sub(r"^  ratio:", "  raito:", text, count=1, flags=re.M))
    out = run_stage(tmp_path, "prune.py", "narrow")
    assert out.returncode != 0, out.stderr[-2000:]
    assert "prune.raito: unknown parameter; did you mean prune.ratio?" in out.stderr
    assert "prune.ratio: missing" in out.stderr
