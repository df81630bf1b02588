"""The deployed model is chosen on validation, among INT8 models whose measured .tflite flash and TFLM
arena fit the budgets."""
import pytest

from kws import chain, summary

BUDGET = 51200
ARENA = 65536


def rows(**over):
    """Every model within budget at 0.90 validation and test top-1, FAR 1%; `over` sets some fields."""
    base = {n: {"tflite_bytes": 40000, "tflm_arena_bytes": 16000, "val_top1": 0.90, "val_far_macro": 0.01, "top1": 0.90, "far_macro": 0.01,
                "precision": "int8"} for n in chain.MODELS}
    for name, fields in over.items():
        base[name].update(fields)
    return base


def test_picks_the_validation_best_not_the_test_best():
    r = rows(student_qat={"val_top1": 0.95, "top1": 0.91}, student_ptq={"val_top1": 0.93, "top1": 0.97})
    best, why = summary.selection(r, BUDGET, ARENA)
    assert best == "student_qat"
    assert why["candidates"]["student_ptq"]["val_top1"] == 0.93 and set(why["candidates"]) == set(chain.INT8)


def test_ties_on_validation_top1_go_to_the_lower_validation_far():
    r = rows(pruned_wide_ptq={"val_top1": 0.95, "val_far_macro": 0.02},
             student_ptq={"val_top1": 0.95, "val_far_macro": 0.005})
    assert summary.selection(r, BUDGET, ARENA)[0] == "student_ptq"


def test_a_full_tie_is_named_and_broken_by_chain_order():
    r = rows(student_ptq={"val_top1": 0.95}, student_qat={"val_top1": 0.95}, pruned_wide_ptq={"val_top1": 0.95})
    best, why = summary.selection(r, BUDGET, ARENA)
    assert best == "pruned_wide_ptq" and why["tied_with"] == ["student_ptq", "student_qat"]
    assert summary.selection(rows(student_ptq={"val_top1": 0.95}), BUDGET, ARENA)[1]["tied_with"] == []


def test_over_budget_models_are_never_deployed():
    r = rows(pruned_wide_ptq={"val_top1": 0.99, "tflite_bytes": BUDGET + 1},
             teacher={"val_top1": 1.0, "tflite_bytes": 1000},  # fp32: not a candidate however small
             pruned_narrow_ptq={"val_top1": 0.96})
    best, why = summary.selection(r, BUDGET, ARENA)
    assert best == "pruned_narrow_ptq" and not why["candidates"]["pruned_wide_ptq"]["fits_budget"]
    with pytest.raises(ValueError, match="no INT8 model fits"):
        summary.selection(rows(**{n: {"tflite_bytes": BUDGET + 1} for n in chain.INT8}), BUDGET, ARENA)


def test_models_over_the_ram_budget_are_never_deployed():
    r = rows(student_ptq={"val_top1": 0.99, "tflm_arena_bytes": ARENA + 1}, student_qat={"val_top1": 0.95})
    best, why = summary.selection(r, BUDGET, ARENA)
    assert best == "student_qat" and not why["candidates"]["student_ptq"]["fits_budget"]
    with pytest.raises(ValueError, match="arena_budget_bytes=65536"):
        summary.selection(rows(**{n: {"tflm_arena_bytes": ARENA + 1} for n in chain.INT8}), BUDGET, ARENA)


def test_a_16x8_model_competes_on_its_measured_bytes():
    """Its .tflite carries the precision it was scored at, so it is a candidate like any other,
    held to the budgets by the 16-bit arena TFLM measured."""
    r = rows(pruned_wide_ptq={"val_top1": 0.99, "precision": "16x8"}, student_ptq={"val_top1": 0.95})
    best, why = summary.selection(r, BUDGET, ARENA)
    assert best == "pruned_wide_ptq" and why["candidates"]["pruned_wide_ptq"]["precision"] == "16x8"
    r["pruned_wide_ptq"]["tflm_arena_bytes"] = ARENA + 1
    assert summary.selection(r, BUDGET, ARENA)[0] == "student_ptq"
    with pytest.raises(ValueError, match=r"pruned_wide_ptq .*\(16x8\).*quantize.max_int8_loss"):
        summary.selection(rows(**{n: {"precision": "16x8", "tflm_arena_bytes": ARENA + 1} for n in chain.INT8}),
                          BUDGET, ARENA)
