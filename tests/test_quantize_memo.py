"""The memo's quantization paragraph and plot, from a metrics/quantize.json shaped as the export stage writes it."""
import json

import pytest

from kws import memo
from test_memo import DEPLOYED, png_size, write_metrics

LAYERS = ["Conv stem_bn", "Conv blocks.0.bn1", "Conv blocks.0.bn2", "Add blocks.0", "Gemm fc"]


def score(top1, far=0.02):
    return {"top1": top1, "far": far}


def model_report(over_budget=None):
    """The export stage's report of one model; `over_budget`: INT8 lost 1.8 points and then 16x8
    was 'chosen' (96.6%), 'useless' (no better than INT8) or 'unavailable' (a BC-ResNet)."""
    wide = over_budget == "chosen"
    int16 = {"chosen": score(0.966), "useless": score(0.950), "unavailable": None, None: None}[over_budget]
    return {"fp32": score(0.968), "int8": score(0.950 if over_budget else 0.966), "max_int8_loss": 0.005,
            "precision": "16x8" if wide else "int8", "16x8": int16, "final": int16 if wide else score(0.950 if over_budget else 0.966),
            "within_budget": over_budget in (None, "chosen"),
            "bytes": {"arena_int8": 4848, "arena": 4848 * (1 + wide), "arena_extra": 4848 * wide, "flash_extra": 1536 * wide}}


def quantize_json(over_budget=None):
    rows = [{"node": f"n{i}", "layer": layer, "only_quantized_top1": 0.968 - 0.004 * (i == 1),
             "only_quantized_far": 0.02, "only_float_top1": 0.966 + 0.002 * (i == 1), "only_float_far": 0.02}
            for i, layer in enumerate(LAYERS)]
    sweep = [{"method": m, "calib_clips": n, "val_top1": 0.96 + 0.002 * i, "val_top1_lo": 0.94, "val_top1_hi": 0.975,
              "val_far": 0.02} for i, (m, n) in enumerate([("minmax", 64), ("minmax", 512), ("entropy", 512)])]
    table = {"fp32": score(0.968), "int8": score(0.966), "layers": rows,
             "most_sensitive": ["Conv blocks.0.bn1", "Conv stem_bn", "Gemm fc"]}
    return {"settings": {"method": "minmax", "calib_clips": 512, "per_channel": True, "equalize": True,
                         "max_int8_loss": 0.005},
            "models": {"pruned_wide": model_report(), "pruned_narrow": model_report(),
                       "student_kd": model_report(over_budget)},
            "sensitivity": {"student_kd": table, "pruned_wide": table, "pruned_narrow": table},
            "calibration_sweep": {"model": "student_kd", "rows": sweep}}


@pytest.fixture
def memo_with(tmp_path):
    def write(q):
        root = tmp_path / f"run{len(list(tmp_path.iterdir()))}"  # a fresh workspace per call
        write_metrics(root / "metrics")
        (root / "metrics" / "quantize.json").write_text(json.dumps(q))
        files = memo.write_memo(root / "metrics", root / "memo")
        return (root / "memo" / "MEMO.md").read_text(), files
    return write


def test_quantization_paragraph_names_layers_calibration_and_qat(memo_with):
    text, files = memo_with(quantize_json())
    section = text[text.index("## Quantization"):]
    assert DEPLOYED == "student_ptq" and "`student_ptq`" in section
    assert "Conv blocks.0.bn1 (96.4% when only it is INT8, 96.8% when only it stays float)" in section
    assert "minmax x 64: 96.0% (94.0-97.5)" in section and "all overlap" in section
    assert "no model lost more than that, so all stay int8" in section
    assert "PTQ leaves 1 of 540 validation clips to win back" in section  # fp32 96.8%, PTQ 96.6% of 540
    assert "PTQ and QAT cannot be told apart here" in section  # 2 vs 3 test clips only one got right
    plot = memo.Path(files[0]).parent / memo.QUANT_PLOT
    assert plot in files and png_size(plot)[0] > 600


def test_a_16x8_decision_is_given_with_its_scores_and_bytes(memo_with):
    text, _ = memo_with(quantize_json("chosen"))
    assert ("`student_kd` INT8 95.0%, 16x8 96.6% (fp32 96.8%): 16x8, within budget, costing 4848 B of arena "
            "(planned) and 1536 B of flash (int64 biases)") in text
    text, _ = memo_with(quantize_json("useless"))
    assert "`student_kd` INT8 95.0%, 16x8 95.0% (fp32 96.8%): kept INT8, as 16x8 won nothing back" in text
    text, _ = memo_with(quantize_json("unavailable"))
    assert "`student_kd` INT8 95.0% (fp32 96.8%): kept INT8, **over budget**: this family has no verified 16x8" in text


def test_a_forced_precision_is_said_to_be_the_setting_not_the_budget(memo_with):
    q = quantize_json()
    q["settings"]["activations"] = "16x8"
    q["models"]["student_kd"] = model_report("chosen")
    text, _ = memo_with(q)
    assert ("The budget does not decide: `quantize.activations: 16x8` puts every PTQ model at 16x8; "
            "`student_kd` 16x8 96.6%, +4848 B arena (planned)") in text
    q["settings"]["activations"] = "int8"
    q["models"]["student_kd"] = model_report("unavailable")
    text, _ = memo_with(q)
    assert "`quantize.activations: int8` puts every PTQ model at int8; `student_kd` **over budget**" in text


def test_without_a_quantization_report_the_memo_has_no_section(tmp_path):
    write_metrics(tmp_path / "metrics")
    memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
    assert "## Quantization" not in (tmp_path / "memo" / "MEMO.md").read_text()


def test_no_layer_is_called_sensitive_within_a_clip(memo_with):
    q = quantize_json()
    for row in q["sensitivity"]["student_kd"]["layers"]:
        row["only_quantized_top1"] = max(row["only_quantized_top1"], 0.967)  # 1 of 540 clips below fp32 at most
    text, _ = memo_with(q)
    assert "no layer costs more than 1 validation clip when it alone is INT8 (Conv blocks.0.bn1: 96.7%)" in text
    assert "most sensitive layers" not in text
