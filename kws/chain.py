"""The models on the effort-vs-accuracy curve, where each lives, and what it cost to make.

One table, read by the export, summary and memo stages (dvc.yaml lists the same paths)."""

# The stages behind each model, in order; a model's effort is the sum of its stages' efforts.
PRUNED_WIDE = ["teacher", "prune/wide", "finetune/wide"]
PRUNED_NARROW = PRUNED_WIDE + ["prune/narrow", "finetune/narrow"]
DISTILLED = PRUNED_NARROW + ["distill/kd"]
QUANTIZED_FROM = "student_kd"  # the fp32 student both INT8 models are made from

# name: (model file evaluated, label, step, stage metrics whose effort adds up to this model)
MODELS = {
    "teacher": ("models/teacher.pt", "Teacher (TC-ResNet8)", "train", ["teacher"]),
    "pruned_wide": ("models/finetuned_wide.pt", "Pruned, wide", "prune+finetune", PRUNED_WIDE),
    "pruned_narrow": ("models/finetuned_narrow.pt", "Pruned, narrow", "prune+finetune", PRUNED_NARROW),
    "student_nokd": ("models/student_nokd.pt", "Student, no KD", "train (no KD)", ["distill/nokd"]),
    "student_kd": ("models/student_kd.pt", "Student, KD", "distil", DISTILLED),
    "student_ptq": ("models/onnx/student_kd.int8.onnx", "Student, KD + PTQ INT8", "PTQ", DISTILLED + ["export"]),
    "student_qat": ("models/qat/student_qat.int8.onnx", "Student, KD + QAT INT8", "QAT", DISTILLED + ["qat"]),
}
FP32 = [n for n, (path, *_) in MODELS.items() if path.endswith(".pt")]
INT8 = [n for n, (path, *_) in MODELS.items() if path.endswith(".onnx")]


def checkpoint_file(name):
    """The torch checkpoint behind model `name` (INT8 models: the fp32 student they were quantized from)."""
    return MODELS[name if name in FP32 else QUANTIZED_FROM][0]


def int8_file(name):
    """The INT8 ONNX file whose footprint stands for model `name` (fp32 models: their PTQ copy)."""
    path = MODELS[name][0]
    return path if path.endswith(".onnx") else f"models/onnx/{name}.int8.onnx"


def fp32_file(name):
    """The fp32 ONNX file of `name` (INT8 models: the fp32 student they were quantized from)."""
    return f"models/onnx/{name if name in FP32 else QUANTIZED_FROM}.fp32.onnx"
