"""The models on the effort-vs-accuracy curve, where each lives, and what it cost to make.

One table, read by the export, summary and memo stages (dvc.yaml's evaluate stages list the same
names and paths; tests/test_chain.py holds the two together)."""
from pathlib import Path

# The stages behind each model, in order; a model's effort is the sum of its stages' efforts.
PRUNED_WIDE = ["teacher", "prune/wide", "finetune/wide"]
PRUNED_NARROW = PRUNED_WIDE + ["prune/narrow", "finetune/narrow"]
DISTILLED = PRUNED_NARROW + ["teacher_replicas", "distill/kd"]

# distill.teacher_replicas more teachers of the teacher's recipe, for the distillation ensemble
TEACHER_REPLICAS = "models/teacher_replicas"

# name: (model file evaluated, label, step, stage metrics whose effort adds up to this model)
MODELS = {
    "teacher": ("models/teacher.pt", "Teacher (TC-ResNet8)", "train", ["teacher"]),
    "pruned_wide": ("models/finetuned_wide.pt", "Pruned, wide", "prune+finetune", PRUNED_WIDE),
    "pruned_wide_ptq": ("models/onnx/pruned_wide.int8.onnx", "Pruned, wide + PTQ INT8", "PTQ",
                        PRUNED_WIDE + ["export"]),
    "pruned_narrow": ("models/finetuned_narrow.pt", "Pruned, narrow", "prune+finetune", PRUNED_NARROW),
    "pruned_narrow_ptq": ("models/onnx/pruned_narrow.int8.onnx", "Pruned, narrow + PTQ INT8", "PTQ",
                          PRUNED_NARROW + ["export"]),
    "student_nokd": ("models/student_nokd.pt", "Student, no KD", "train (no KD)", ["distill/nokd"]),
    "student_kd": ("models/student_kd.pt", "Student, KD", "distil", DISTILLED),
    "student_ptq": ("models/onnx/student_kd.int8.onnx", "Student, KD + PTQ INT8", "PTQ", DISTILLED + ["export"]),
    "student_qat": ("models/qat/student_qat.int8.onnx", "Student, KD + QAT INT8", "QAT", DISTILLED + ["qat"]),
}
# the fp32 model each INT8 model was quantized from
QUANTIZED_FROM = {"pruned_wide_ptq": "pruned_wide", "pruned_narrow_ptq": "pruned_narrow",
                  "student_ptq": "student_kd", "student_qat": "student_kd"}
FP32 = [n for n, (path, *_) in MODELS.items() if path.endswith(".pt")]
INT8 = [n for n, (path, *_) in MODELS.items() if path.endswith(".onnx")]


def label(name, precision="int8"):
    """Model `name`'s label, naming 16x8 where its .tflite carries int16 activations."""
    text = MODELS[name][1]
    return text.replace("INT8", "16x8") if precision == "16x8" else text


def fp32_source(name):
    """The fp32 model behind `name`: itself, or the one it was quantized from."""
    return QUANTIZED_FROM.get(name, name)


def checkpoint_file(name):
    """The torch checkpoint behind model `name` (INT8 models: the fp32 model they were quantized from)."""
    return MODELS[fp32_source(name)][0]


def int8_file(name):
    """The INT8 ONNX file whose footprint stands for model `name` (fp32 models: their PTQ copy)."""
    path = MODELS[name][0]
    return path if path.endswith(".onnx") else f"models/onnx/{name}.int8.onnx"


def tflite_file(name):
    """The .tflite the firmware stage writes of `int8_file(name)`, named after it."""
    return f"models/tflite/{Path(int8_file(name)).name.removesuffix('.onnx')}.tflite"


def eval_file(name):
    """The evaluate stage's headline metrics of model `name` (dvc.yaml: metrics/eval/${key}.json)."""
    return f"metrics/eval/{name}.json"


def fp32_file(name):
    """The fp32 ONNX file of `name` (INT8 models: the fp32 model they were quantized from)."""
    return f"models/onnx/{fp32_source(name)}.fp32.onnx"
