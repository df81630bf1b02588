"""Deployment figures of an ONNX model as a microcontroller runtime (TFLite Micro with CMSIS-NN
kernels) would see it: flash for weights, SRAM for activations, MACs, and a CPU latency proxy.

Fused-graph conventions (`activation_graph`):
- QuantizeLinear / DequantizeLinear on activations are fused away: their outputs alias their
  input, so DQ -> Conv -> Q is one int8 conv writing one buffer, and the graph input is the int8
  feature map. The Relu that the quantizer folded into a Conv's output range stays folded.
- Constants are flash, not SRAM: initializers, Constant nodes, weight/bias DQs, and anything
  computed from constants and static shapes alone (Shape -> Gather -> Concat chains).
- Reshape / Flatten / Squeeze / Unsqueeze / Identity are in-place aliases, as in TFLM: no new
  buffer, and the aliased buffer stays alive until the last consumer of any alias.
- Every other node is one step that writes fresh buffers (no in-place ops). Kernel scratch
  buffers (CMSIS-NN im2col, MEAN accumulators) and persistent per-channel multipliers are not
  counted, so SRAM figures are the activation arena only.
"""
import math
import time

import numpy as np
import onnx
import onnxruntime as ort

ALIAS_OPS = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd"}


def _load(model):
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


ACTIVATION_BYTES = {"int8": 1, "16x8": 2, "float32": 4}


def _precision(graph):
    """'int8' for a QDQ model with 8-bit activations, '16x8' for one with 16-bit activations
    (int8 weights), 'float32' for one without quantization nodes; ValueError for a mix of 8- and
    16-bit activations, which no .tflite carries (kws.mixed)."""
    ops = {n.op_type for n in graph.node}
    if ops & QOPERATOR_OPS:
        raise ValueError(f"only QDQ-format quantized models are supported; found {sorted(ops & QOPERATOR_OPS)}")
    consts = {t.name: t for t in graph.initializer}
    wide = {consts[n.input[2]].data_type in (onnx.TensorProto.INT16, onnx.TensorProto.UINT16)
            for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in consts
            and len(n.input) > 2 and n.input[2] in consts}
    if len(wide) > 1:
        raise ValueError("the model's activations mix 8 and 16 bits; expected all int8 or all 16x8")
    return "float32" if not {"QuantizeLinear", "DequantizeLinear"} & ops else "16x8" if wide == {True} else "int8"


def precision(model):
    """Activation precision of an ONNX model (path or ModelProto): 'int8', '16x8' or 'float32'."""
    return _precision(_load(model).graph)


def _constant_tensors(graph):
    """Initializers plus the tensor values of Constant nodes (renamed to the node's output)."""
    consts = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute if node.op_type == "Constant" else ():
            if attr.name == "value":
                tensor = onnx.TensorProto()
                tensor.CopyFrom(attr.t)
                tensor.name = node.output[0]
                consts.append(tensor)
    return consts


def _nbytes(tensor):
    return math.prod(tensor.dims) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def flash_bytes(model):
    """Bytes the model's constants take in flash.

    INT8 QDQ model: int8 weights, int32 biases (int64 for a 16x8 model), and qparams of weights
    and activations (scales float32, zero points int8 or int16). Bias scale/zero point are not counted: they are derived
    (s_in * s_w, 0) by the runtime. Unquantized float constants, if any, land in "other".
    fp32 model: just the float32 constant bytes under "total".
    int64 shape constants (Reshape targets, axes) are ignored in both cases.
    """
    model = _load(model)
    graph = model.graph
    consts = {t.name: t for t in _constant_tensors(graph)}
    if _precision(graph) == "float32":
        total = sum(_nbytes(t) for t in consts.values() if t.data_type != onnx.TensorProto.INT64)
        return {"dtype": "float32", "total": total}

    role = {}  # initializer name -> what it is; the first use decides, so each is counted once
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        data, qparams = node.input[0], [i for i in node.input[1:] if i]
        if data in consts:  # a quantized weight or bias
            is_bias = consts[data].data_type == onnx.TensorProto.INT32
            role.setdefault(data, "biases" if is_bias else "weights")
            for q in qparams:
                role.setdefault(q, "derived" if is_bias else "qparams")
        else:
            for q in qparams:
                role.setdefault(q, "qparams")
    precision = _precision(graph)
    out = {"dtype": precision, "weights": 0, "biases": 0, "qparams": 0, "other": 0}
    for name, t in consts.items():
        kind = role.get(name, "shape" if t.data_type == onnx.TensorProto.INT64 else "other")
        if kind in out:
            out[kind] += _nbytes(t)
    if precision == "16x8":
        out["biases"] *= 2  # stored int32 here; TFLite's 16x8 kernels take them as int64
    out["total"] = out["weights"] + out["biases"] + out["qparams"] + out["other"]
    return out


def _static_shapes(model):
    """name -> shape of every tensor, from onnx shape inference with the batch fixed to 1."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # don't touch the caller's copy
    graph = model.graph
    init = {t.name for t in graph.initializer}
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name not in init and dims and dims[0].dim_value <= 0:
            dims[0].dim_value = 1
    del graph.value_info[:]  # stale entries may still carry a symbolic batch
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _numel(shapes, name):
    shape = shapes.get(name)
    if shape is None or None in shape:
        raise ValueError(f"no static shape for tensor {name!r} after shape inference (got {shape})")
    return math.prod(shape)


def _constant_names(graph):
    """Tensors known before inference: constants and everything computed from them or from
    static shapes alone. Nodes of a valid ONNX graph are topologically sorted."""
    const = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Shape", "Size") or all(i in const for i in node.input if i):
            const.update(node.output)
    return const


def activation_graph(model, bytes_per_element=None):
    """(tensors, steps) of the fused graph an MCU runtime executes, in execution order.

    tensors: buffer name -> bytes (batch 1); steps: [(op_name, input buffers, output buffers)].
    bytes_per_element defaults to the model's activation width (`ACTIVATION_BYTES`).
    """
    model = _load(model)
    graph = model.graph
    if bytes_per_element is None:
        bytes_per_element = ACTIVATION_BYTES[_precision(graph)]
    shapes = _static_shapes(model)
    const = _constant_names(graph)
    alias = {}  # tensor -> the buffer it shares
    steps = []
    for node in graph.node:
        if all(o in const for o in node.output):
            continue
        data = [alias.get(i, i) for i in node.input if i and i not in const]
        outputs = [o for o in node.output if o]
        if node.op_type in ALIAS_OPS:
            alias[outputs[0]] = data[0]
        else:
            steps.append((node.name or node.op_type, data, outputs))
    inputs = [i.name for i in graph.input if i.name not in const]
    names = dict.fromkeys(inputs + [t for _, ins, outs in steps for t in ins + outs])
    tensors = {t: _numel(shapes, t) * bytes_per_element for t in names}
    return tensors, steps


def lifetimes(tensors, steps):
    """name -> (first step, last step) it is alive. A tensor no step produces is a graph input
    and lives from step 0; one no step consumes is a graph output and lives to the last step."""
    if not steps:
        raise ValueError("the graph has no compute steps")
    unknown = {t for _, ins, outs in steps for t in ins + outs} - set(tensors)
    if unknown:
        raise ValueError(f"steps use tensors with no size: {sorted(unknown)}")
    first, last = {}, {}
    for i, (_, ins, outs) in enumerate(steps):
        for t in outs:
            first.setdefault(t, i)
        for t in ins:
            last[t] = i
    end = len(steps) - 1
    return {t: (first.get(t, 0), last.get(t, end)) for t in tensors}


def peak_sram_liveness(tensors, steps):
    """(peak bytes, step index): the most bytes alive at once. A lower bound for any arena."""
    life = lifetimes(tensors, steps)
    live = [sum(tensors[t] for t, (a, b) in life.items() if a <= i <= b) for i in range(len(steps))]
    step = max(range(len(live)), key=live.__getitem__)
    return live[step], step


def peak_sram_planned(tensors, steps):
    """(arena bytes, name -> offset) from a greedy planner like TFLM's GreedyMemoryPlanner:
    largest buffer first, each at the lowest offset that doesn't collide in address range with
    a placed buffer whose lifetime overlaps."""
    life = lifetimes(tensors, steps)
    placed = []  # (offset, size, first, last)
    offsets = {}
    for t in sorted(tensors, key=lambda t: (-tensors[t], life[t][0])):
        size, (a, b) = tensors[t], life[t]
        offset = 0
        for lo, hi in sorted((o, o + s) for o, s, a2, b2 in placed if a2 <= b and a <= b2):
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        offsets[t] = offset
        placed.append((offset, size, a, b))
    arena = max((offsets[t] + tensors[t] for t in tensors), default=0)
    assert arena >= peak_sram_liveness(tensors, steps)[0], "planner beat the liveness lower bound"
    return arena, offsets


def macs(model):
    """Multiply-accumulates per inference (batch 1) of Conv (any rank, grouped), Gemm, MatMul."""
    model = _load(model)
    shapes = _static_shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":  # each output element: c_in/groups * prod(kernel) MACs
            total += _numel(shapes, node.output[0]) * math.prod(shapes[node.input[1]][1:])
        elif node.op_type == "Gemm":
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            k = shapes[node.input[0]][0 if trans_a else 1]
            total += _numel(shapes, node.output[0]) * k
        elif node.op_type == "MatMul":
            total += _numel(shapes, node.output[0]) * shapes[node.input[0]][-1]
    return total


NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8,
            "tensor(uint8)": np.uint8}


def latency_ms(model_path, n_runs=200, warmup=20):
    """Median and p90 wall time (ms) of one batch-1 inference on one CPU thread (onnxruntime).
    A desktop-CPU proxy for comparing models, not an MCU cycle count."""
    source = model_path.SerializeToString() if isinstance(model_path, onnx.ModelProto) else str(model_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in sess.get_inputs():
        if inp.type not in NP_TYPES:
            raise ValueError(f"latency_ms: unsupported input type {inp.type} for {inp.name!r}")
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(NP_TYPES[inp.type])
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(n_runs):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "n_runs": n_runs}


def summarize(onnx_path, n_runs=200, warmup=20):
    """All deployment figures of one ONNX model (INT8 QDQ or fp32)."""
    model = _load(onnx_path)
    tensors, steps = activation_graph(model)
    peak, step = peak_sram_liveness(tensors, steps)
    arena, _ = peak_sram_planned(tensors, steps)
    return {
        "flash": flash_bytes(model),
        "sram_liveness": {"bytes": peak, "step": step, "op": steps[step][0]},
        "sram_planned": arena,
        "macs": macs(model),
        "latency": latency_ms(model, n_runs, warmup),
    }
