"""fp32 ONNX -> fp16 ONNX with fp32 inputs and outputs, for strongly typed TensorRT.

TensorRT 11 removed the FP16 builder flag: an engine runs in the precision its ONNX
graph declares. This converts a graph the way ``keep_io_types`` converters do:

- float initializers and float constants (Constant, ConstantOfShape) become float16,
  ``Cast(to=float)`` becomes ``Cast(to=float16)``;
- each float graph input gets a Cast to float16 in front, each float output a Cast
  back to float32, so callers keep feeding and reading float32;
- ops without a float16 form (``Range``, random ops) or that need float32 inputs
  (``Resize`` scales) are fenced with casts and run in float32.

Pure ``onnx``; the result passes ``onnx.checker`` with full type inference.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
# Ops that must run in float32 (no float16 type in the ONNX schema).
KEEP_FLOAT32 = frozenset({"Range", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                          "Multinomial"})
# (op type, input index) that must stay float32 whatever the rest of the op runs in.
FLOAT32_INPUTS = frozenset({("Resize", 2)})
_F16_MAX = float(np.finfo(np.float16).max)


def _to_f16(t: TensorProto) -> TensorProto:
    a = numpy_helper.to_array(t).astype(np.float32)
    out = numpy_helper.from_array(np.clip(a, -_F16_MAX, _F16_MAX).astype(np.float16), t.name)
    return out


def convert_float_to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of ``model``; inputs and outputs stay float32."""
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = model.graph
    types: dict[str, int] = {}
    for vi in (*g.input, *g.output, *g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    is_float = lambda name: types.get(name) == FLOAT  # noqa: E731

    new_inits = [_to_f16(t) if t.data_type == FLOAT else t for t in g.initializer]
    del g.initializer[:]
    g.initializer.extend(new_inits)

    nodes: list[onnx.NodeProto] = []
    counter = [0]

    def cast(src: str, to: int, hint: str) -> tuple[onnx.NodeProto, str]:
        counter[0] += 1
        out = f"{hint}__to{'16' if to == FLOAT16 else '32'}_{counter[0]}"
        return helper.make_node("Cast", [src], [out], to=to, name=f"fp16_cast_{counter[0]}"), out

    # Graph inputs: float32 outside, float16 inside.
    rename: dict[str, str] = {}
    for inp in g.input:
        if is_float(inp.name):
            n, out = cast(inp.name, FLOAT16, inp.name)
            nodes.append(n)
            rename[inp.name] = out

    out_names = {o.name for o in g.output if is_float(o.name)}
    for node in g.node:
        ins = [rename.get(i, i) for i in node.input]
        fenced = node.op_type in KEEP_FLOAT32
        for k, name in enumerate(node.input):
            if name and is_float(name) and (fenced or (node.op_type, k) in FLOAT32_INPUTS):
                n, ins[k] = cast(ins[k], FLOAT, name)
                nodes.append(n)
        del node.input[:]
        node.input.extend(ins)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT and node.op_type in (
                    "Constant", "ConstantOfShape"):
                a.t.CopyFrom(_to_f16(a.t))
            if node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = FLOAT16
        post = []
        for k, name in enumerate(node.output):
            if fenced and is_float(name):
                node.output[k] = f"{name}__f32"
                n, _ = cast(node.output[k], FLOAT16, name)
                n.output[0] = name
                post.append(n)
        nodes.append(node)
        nodes.extend(post)

    # Graph outputs: the producer writes float16, a final Cast gives float32.
    for node in nodes:
        for k, name in enumerate(node.output):
            if name in out_names:
                node.output[k] = f"{name}__f16"
    for name in out_names:
        counter[0] += 1
        nodes.append(helper.make_node("Cast", [f"{name}__f16"], [name], to=FLOAT, name=f"fp16_cast_{counter[0]}"))

    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model
