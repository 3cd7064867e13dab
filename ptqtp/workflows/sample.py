"""The quick report on the built-in sample matrix (``ptqtp demo --sample``): every method's
error, the artifact, a model image for the engine and the error budget, in seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ptqtp.formats.artifact import load_artifact, save_artifact
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.methods import PTQTPConfig, get_method, quantize

from .budget import error_budget, random_activations
from .export import MODEL_IMAGE_HEADERS, export_model_image
from .report import markdown_table, sample_weight

__all__ = ["sample_report", "SAMPLE_METHODS"]

SAMPLE_METHODS = ("ptqtp", "ternary", "rtn2", "rtn3", "rtn4")


def sample_report(out: Path, config: PTQTPConfig) -> str:
    """Write ``out/artifact.safetensors``, ``out/image/`` and ``out/report.md``; return the report."""
    W = sample_weight()
    print(
        f"[demo] sample weight {tuple(W.shape)} (Student-t(4), outlier channels), G={config.group_size}",
        file=sys.stderr,
    )
    rows, results = [], {}
    for method in SAMPLE_METHODS:
        r = quantize(W, method, config, name="sample")
        results[method] = r
        bits, bound = get_method(method).bits_per_weight(config.group_size)
        rows.append([method, r.rel_error, bits, bound, r.iterations, round(r.seconds, 3)])
    table = markdown_table(
        ["method", "rel. Frobenius error", "bits/weight (packed)", "bits/weight (bound)", "iterations", "seconds"], rows
    )
    out.mkdir(parents=True, exist_ok=True)
    artifact = save_artifact(out / "artifact.safetensors", {"sample": results["ptqtp"]}, config=config)
    int_config = IntConfig()
    engine = EngineParams(max_d=W.shape[1])
    image_rows = export_model_image(artifact, out / "image", engine.layout, int_config, progress=False)
    layer = load_artifact(artifact).layers["sample"]
    golden = GoldenLayer.from_packed(layer, int_config)
    x = random_activations(16, W.shape[1])
    budget = error_budget(layer, x, int_config, weight=W.double().numpy())
    report = (
        f"# ptqtp demo\n\nSample weight {tuple(W.shape)}, group size {config.group_size}.\n\n{table}\n\n"
        f"## Model image (engine P={engine.lanes} R={engine.rows} DW={engine.data_width}, A={int_config.act_bits}, "
        f"S={int_config.scale_bits})\n\n"
        + markdown_table(MODEL_IMAGE_HEADERS, image_rows)
        + "\n\n## Error budget (16 random vectors, relative output error)\n\n"
        + markdown_table(list(budget), [list(budget.values())])
        + f"\n\nGolden accumulator range on these vectors: "
        f"{int(np.abs(golden.acc(golden.quantize_input(x)[0])).max())} < 2^{golden.acc_bits - 1}\n"
    )
    (out / "report.md").write_text(report)
    return report
