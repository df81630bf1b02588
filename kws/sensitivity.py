"""What quantizing each layer costs: validation top-1 and FAR of an fp32 ONNX model with only
one layer quantized (the rest float) and with only that layer left float (the rest INT8), through
onnxruntime's own `nodes_to_quantize` / `nodes_to_exclude`, so every variant is the same PTQ the
pipeline ships, not a hand-written fake quantization."""
import tempfile
from pathlib import Path

import numpy as np
import onnx

from kws import export, metrics, quant

# ReLU/Clip are folded into the output range of the op before them (a removable activation), so
# each is measured as part of its producer, not as a layer of its own; layout ops compute nothing.
NOT_LAYERS = quant.FUSED_ACTIVATIONS | quant.LAYOUT_OPS | {"QuantizeLinear", "DequantizeLinear", "Constant", "Shape",
                                                          "Identity"}


def score(logits, labels, max_frr):
    """{val_top1, val_far}: top-1 and macro FAR at `max_frr` with thresholds set on the same clips
    (as evaluate's validation figures)."""
    labels = np.asarray(labels)
    s = metrics.keyword_scores(logits)
    return {"top1": float(np.mean(np.asarray(logits).argmax(1) == labels)),
            "far": metrics.far_at_frr(s, labels, s, labels, max_frr)["far_macro"]}


def layer_label(node: onnx.NodeProto) -> str:
    """'Conv blocks.0.bn1': the op and the torch module it was exported from (the BN a conv was
    folded with), read from the dynamo exporter's metadata; the node name when there is none."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        names = [s.strip(" '\"") for s in scopes.strip("[]").split(",")]
        if len(names) > 2 and names[-2]:
            return f"{node.op_type} {names[-2]}"
    return f"{node.op_type} {node.name}"


def layers(fp32_onnx_path):
    """[(node name, label)] of the nodes quantize_static quantizes as layers of their own, in graph order."""
    graph = onnx.load(str(fp32_onnx_path)).graph
    return [(n.name, layer_label(n)) for n in graph.node if n.op_type not in NOT_LAYERS]


class Quantizer:
    """Repeated PTQ variants of one fp32 ONNX model on the same calibration clips (calibrated once,
    through quantize_static's calibration cache), each scored on validation clips."""

    def __init__(self, fp32_onnx_path, calib, val_x, val_y, max_frr, method="minmax", per_channel=True):
        self.fp32 = Path(fp32_onnx_path)
        self.calib, self.val_x, self.val_y, self.max_frr = calib, np.asarray(val_x), np.asarray(val_y), max_frr
        self.options = {"method": method, "per_channel": per_channel}
        self._dir = tempfile.TemporaryDirectory(prefix="kws-quant-")
        self.cache = Path(self._dir.name) / "calibration.json"
        self.n = 0

    def score(self, onnx_path):
        return score(export.ort_logits(onnx_path, self.val_x), self.val_y, self.max_frr)

    def quantize(self, out=None, **variant):
        """(path, validation score) of one PTQ variant (kws.quant.ptq keywords: int16_activations,
        nodes_to_quantize, nodes_to_exclude); written to `out`, or a scratch file."""
        self.n += 1
        path = Path(out) if out is not None else Path(self._dir.name) / f"variant{self.n}.onnx"
        quant.ptq(self.fp32, path, self.calib, calibration_cache=self.cache, **self.options, **variant)
        return path, self.score(path)


def layer_sensitivity(q: Quantizer):
    """One row per layer: validation top-1 and FAR with only that layer quantized and with only
    that layer left float, beside the fp32 and all-INT8 figures the rows move between."""
    _, all_int8 = q.quantize()
    rows = []
    for node, label in layers(q.fp32):
        _, alone = q.quantize(nodes_to_quantize=[node])
        _, spared = q.quantize(nodes_to_exclude=[node])
        rows.append({"node": node, "layer": label, "only_quantized_top1": alone["top1"],
                     "only_quantized_far": alone["far"], "only_float_top1": spared["top1"],
                     "only_float_far": spared["far"]})
    return {"fp32": q.score(q.fp32), "int8": all_int8, "layers": rows}


def most_sensitive(table, n=3):
    """The `n` layers whose quantization costs most: lowest top-1 when quantized alone, then
    highest top-1 when left float (a tensor two layers share is still quantized by the other
    when one is spared, so quantizing alone is the sharper measure)."""
    rows = sorted(table["layers"], key=lambda r: (r["only_quantized_top1"], -r["only_float_top1"]))
    return [r["layer"] for r in rows[:n]]
