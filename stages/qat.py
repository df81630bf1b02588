"""qat: quantization-aware training of the distilled student (PT2E fake-quant, BN folded), its
INT8 QDQ ONNX, the torch quantized model it came from (.pt2, for the firmware stage), and the
parity check between the two -> models/qat/."""
import time
from pathlib import Path

from kws import checkpoint, io, quant, train

OUT = Path("models/qat")


def main():
    p, augment, cfg = io.params("qat"), io.params("augment"), io.feature_config()
    t0 = time.time()
    model, _ = checkpoint.load("models/student_kd.pt", cfg)
    calib_x, _ = io.load_split("calib")
    test_x, _ = io.load_split("test")
    example = calib_x[:8]
    result = {}

    def train_fn(qat_model):
        # the best validation epoch, not averaged weights: the fake-quantized graph has its
        # BatchNorm folded, so averaged weights would have no statistics to re-estimate
        result.update(train.train_on_dataset(qat_model, {**p, "average_share": 0}, augment, "qat",
                                             set_train=quant.set_train_mode))

    reference = quant.qat(model, example, train_fn)
    OUT.mkdir(parents=True, exist_ok=True)
    path = quant.to_int8_onnx(reference, example, OUT / "student_qat.int8.onnx")
    quant.save_reference(reference, example, OUT / "student_qat.pt2")
    io.write_json(OUT / "feature_config.json", cfg)
    agree = quant.parity(path, reference, test_x.numpy())
    io.write_json("metrics/qat.json", {"parity": agree, "val_acc": result["val_acc"],
                                       "kept": result["kept"],
                                       "effort": {"clip_epochs": result["clip_epochs"], "wall_s": time.time() - t0}})
    if agree < p["min_parity"]:
        raise SystemExit(f"[qat] onnxruntime INT8 agrees with the torch quantized model on {agree:.2%} of test clips, "
                         f"below qat.min_parity={p['min_parity']:.2%}; {path} is not trustworthy")
    print(f"[qat] {path}: parity with the torch quantized model {agree:.2%}", flush=True)


if __name__ == "__main__":
    main()
