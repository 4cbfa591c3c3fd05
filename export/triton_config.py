"""Triton `config.pbtxt` files built as ModelConfig protobufs, never as hand-formatted text.

Building the message and printing it with `text_format` means every file we write is one
that Triton's own parser accepts; the golden-file tests pin the exact output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

BYTES, INT32, INT64, FP32 = mc.TYPE_STRING, mc.TYPE_INT32, mc.TYPE_INT64, mc.TYPE_FP32


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: int
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class Batching:
    """Dynamic batching and instances for one model."""

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instances: int = 1
    gpu: bool = False
    dynamic: bool = True  # False: each request runs as the client batched it


@dataclass(frozen=True)
class EnsembleStep:
    model: str
    input_map: dict = field(default_factory=dict)  # step input -> ensemble tensor
    output_map: dict = field(default_factory=dict)  # step output -> ensemble tensor


def _io(tensors, cls):
    out = []
    for t in tensors:
        kwargs = {"name": t.name, "data_type": t.data_type, "dims": list(t.dims)}
        if t.optional:
            kwargs["optional"] = True
        out.append(cls(**kwargs))
    return out


def _base(name: str, inputs, outputs, max_batch_size: int) -> mc.ModelConfig:
    return mc.ModelConfig(
        name=name,
        max_batch_size=max_batch_size,
        input=_io(inputs, mc.ModelInput),
        output=_io(outputs, mc.ModelOutput),
    )


def _scheduling(config: mc.ModelConfig, batching: Batching) -> None:
    if batching.max_batch_size > 0 and batching.dynamic:
        config.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(
                preferred_batch_size=list(batching.preferred_batch_sizes),
                max_queue_delay_microseconds=batching.max_queue_delay_us,
            )
        )
    kind = mc.ModelInstanceGroup.KIND_GPU if batching.gpu else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.append(mc.ModelInstanceGroup(kind=kind, count=batching.instances))


def _parameters(config: mc.ModelConfig, parameters: dict) -> None:
    for key, value in sorted(parameters.items()):
        config.parameters[key].string_value = str(value)


def python_model(name: str, inputs, outputs, batching: Batching, parameters: dict | None = None) -> mc.ModelConfig:
    config = _base(name, inputs, outputs, batching.max_batch_size)
    config.backend = "python"
    _scheduling(config, batching)
    _parameters(config, parameters or {})
    return config


def onnxruntime_model(
    name: str, inputs, outputs, batching: Batching, *, tensorrt_fp16: bool = False, intra_op_threads: int = 0,
    op_library: str = "",
) -> mc.ModelConfig:
    """A native onnxruntime-backend model, for full Triton builds (NGC containers); `op_library`:
    the custom ops the graph uses, loaded by tritonserver when the model loads."""
    config = _base(name, inputs, outputs, batching.max_batch_size)
    config.backend = "onnxruntime"
    config.default_model_filename = "model.onnx"
    _scheduling(config, batching)
    if tensorrt_fp16:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accelerator.name = "tensorrt"
        accelerator.parameters["precision_mode"] = "FP16"
    if intra_op_threads:
        _parameters(config, {"intra_op_thread_count": intra_op_threads})
    if op_library:
        config.model_operations.op_library_filename.append(op_library)
    return config


def ensemble(name: str, inputs, outputs, steps: list[EnsembleStep], max_batch_size: int) -> mc.ModelConfig:
    config = _base(name, inputs, outputs, max_batch_size)
    config.platform = "ensemble"
    for step in steps:
        config.ensemble_scheduling.step.append(
            mc.ModelEnsembling.Step(
                model_name=step.model, model_version=-1, input_map=step.input_map, output_map=step.output_map
            )
        )
    return config


def to_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def write(config: mc.ModelConfig, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(to_text(config))
    return path

