"""The memo's quantization paragraph and plot, from a metrics/quantize.json shaped as the export stage writes it."""
import json

import pytest

from kws import memo
from test_memo import DEPLOYED, png_size, write_metrics

LAYERS = ["Conv stem_bn", "Conv blocks.0.bn1", "Conv blocks.0.bn2", "Add blocks.0", "Gemm fc"]


def score(top1, far=0.02):
    return {"top1": top1, "far": far}


def model_report(lifted=()):
    return {"fp32": score(0.968), "int8": score(0.950 if lifted else 0.966), "max_int8_loss": 0.005,
            "int16_tensors": list(lifted), "candidates": {}, "final": score(0.966), "within_budget": True,
            "bytes": {"arena_int8": 4848, "arena_mixed": 4848 + 808 * len(lifted), "arena_extra": 808 * len(lifted),
                      "flash_extra": 96 * len(lifted), "int16_tensor_bytes": 808 * len(lifted)}}


def quantize_json(lifted=()):
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
                       "student_kd": model_report(lifted)},
            "sensitivity": {"student_kd": table, "pruned_wide": table, "pruned_narrow": table},
            "calibration_sweep": {"model": "student_kd", "rows": sweep}}


@pytest.fixture
def memo_with(tmp_path):
    def write(q):
        write_metrics(tmp_path / "metrics")
        (tmp_path / "metrics" / "quantize.json").write_text(json.dumps(q))
        files = memo.write_memo(tmp_path / "metrics", tmp_path / "memo")
        return (tmp_path / "memo" / "MEMO.md").read_text(), files
    return write


def test_quantization_paragraph_names_layers_calibration_and_qat(memo_with):
    text, files = memo_with(quantize_json())
    section = text[text.index("## Quantization"):]
    assert DEPLOYED == "student_ptq" and "`student_ptq`" in section
    assert "Conv blocks.0.bn1 (96.4% when only it is INT8, 96.8% when only it stays float)" in section
    assert "minmax x 64: 96.0% (94.0-97.5)" in section and "all overlap" in section
    assert "no model needed 16-bit activations" in section
    assert "PTQ leaves 1 of 540 validation clips to win back" in section  # fp32 96.8%, PTQ 96.6% of 540
    assert "PTQ and QAT cannot be told apart here" in section  # 2 vs 3 test clips only one got right
    plot = memo.Path(files[0]).parent / memo.QUANT_PLOT
    assert plot in files and png_size(plot)[0] > 600


def test_lifted_tensors_are_listed_with_their_bytes(memo_with):
    text, _ = memo_with(quantize_json(lifted=("relu", "relu_1")))
    assert "`student_kd`: 2 tensors at 16 bits (relu, relu_1)" in text
    assert "1616 B of arena (planned) and 192 B of flash" in text
    assert "the ONNX file is the reference" in text


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
