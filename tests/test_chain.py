"""kws.chain and dvc.yaml name the same models at the same paths, and every INT8 model knows its source."""
import runpy
from pathlib import Path

import yaml

from kws import chain

DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"


def test_dvc_yaml_evaluates_every_model_of_the_chain():
    evaluated = yaml.safe_load(DVC_YAML.read_text())["stages"]["evaluate"]["foreach"]
    assert evaluated == {name: path for name, (path, *_) in chain.MODELS.items()}


def test_dvc_yaml_writes_each_evaluation_where_kws_chain_reads_it():
    metrics = yaml.safe_load(DVC_YAML.read_text())["stages"]["evaluate"]["do"]["metrics"]
    assert [next(iter(m)) for m in metrics] == [chain.eval_file("${key}")]


def test_int8_models_name_the_fp32_model_they_come_from():
    assert set(chain.QUANTIZED_FROM) == set(chain.INT8)
    assert all(src in chain.FP32 for src in chain.QUANTIZED_FROM.values())
    assert chain.checkpoint_file("pruned_wide_ptq") == "models/finetuned_wide.pt"
    assert chain.fp32_file("student_qat") == "models/onnx/student_kd.fp32.onnx"
    # export writes models/onnx/<fp32 name>.int8.onnx: the PTQ models evaluated are those files
    assert chain.int8_file("pruned_narrow_ptq") == chain.int8_file("pruned_narrow")


def test_every_int8_model_has_one_tflite_named_after_its_onnx():
    # the firmware stage writes, and the summary and package stages read, these files
    assert chain.tflite_file("pruned_wide_ptq") == chain.tflite_file("pruned_wide") == "models/tflite/pruned_wide.int8.tflite"
    assert chain.tflite_file("student_qat") == "models/tflite/student_qat.int8.tflite"
    assert len({chain.tflite_file(n) for n in chain.INT8}) == len(chain.INT8)


def test_dvc_yaml_writes_the_teacher_replicas_where_distillation_reads_them():
    stages = yaml.safe_load(DVC_YAML.read_text())["stages"]
    assert stages["teacher_replicas"]["outs"] == [chain.TEACHER_REPLICAS]
    assert chain.TEACHER_REPLICAS in stages["distill"]["deps"]


def test_distillation_depends_on_every_model_that_can_teach():
    teachers = runpy.run_path(str(DVC_YAML.parent / "stages" / "distill.py"))["TEACHERS"]
    deps = yaml.safe_load(DVC_YAML.read_text())["stages"]["distill"]["deps"]
    assert set(teachers["chain"]) <= set(teachers["ensemble"]) <= set(deps)


def test_a_label_names_the_precision_its_tflite_carries():
    assert chain.label("student_ptq") == "Student, KD + PTQ INT8"
    assert chain.label("student_ptq", "16x8") == "Student, KD + PTQ 16x8"
    assert chain.label("teacher", "fp32") == chain.MODELS["teacher"][1]
