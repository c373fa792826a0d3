"""GPTQ quantization (Frantar et al. 2023) through the optional ``gptqmodel`` extra, calibrated on retain text.

A backend that cannot run yields ``skipped`` with the reason, never a
full-precision model labelled quantized.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from attacks.common import calibration_texts, outcome, skipped, variant_label
from attacks.quantization import PAPER, first_line, smoke_test
from auditor.errors import UserError
from auditor.lm.models import LoadedModel, save_model
from auditor.lm.quant import quantizable_linears
from auditor.plugins import Attack, AttackedVariant, AttackOutcome, RunContext
from auditor.types import ModelSpec


@contextlib.contextmanager
def _scratch(ctx: RunContext) -> Iterator[Path]:
    """A temporary directory under ``ctx.work_dir`` (or the system's), removed afterwards."""
    if ctx.work_dir is not None:
        Path(ctx.work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="attack-", dir=ctx.work_dir) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    """Run with ``directory`` as the working directory (gptqmodel writes ``logs/`` there)."""
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


class QuantGPTQ(Attack):
    """GPTQ (Frantar et al. 2023) through gptqmodel's own load / quantize / save API, calibrated on retain text."""

    name = "quant-gptq"
    summary = "GPTQ 4-bit weight quantization (gptqmodel extra), calibrated on retain-set text."
    paper = PAPER
    tier = "white-box-compute"
    family = "quantization"
    search_space = ("group_size=32", "bits=3", "quant-rtn:bits=4", "quant-rtn:bits=4,group_size=32")
    requires = ("gptqmodel",)
    defaults: ClassVar[dict[str, Any]] = {"bits": 4, "group_size": 128, "calibration_items": 256, "desc_act": False}
    reloadable: ClassVar[bool] = False  # its checkpoints load through gptqmodel only, not as HF dirs

    def validate(self) -> None:
        if self.params["bits"] not in (2, 3, 4, 8):
            raise UserError(f"{self.name}: bits must be 2, 3, 4 or 8")
        if self.params["group_size"] < 1:
            raise UserError(f"{self.name}: group_size must be positive")
        if self.params["calibration_items"] < 1:
            raise UserError(f"{self.name}: calibration_items must be at least 1")

    def apply(self, loaded: LoadedModel, ctx: RunContext) -> AttackOutcome:
        started = time.perf_counter()
        missing = self.missing_requirements()
        if missing:
            return skipped(self, loaded, "gptqmodel is not installed (pip install 'unlearn-audit[gptq]')", started)
        texts = calibration_texts(ctx.data.retain.items[: self.params["calibration_items"]], ctx.prompts)
        if not texts:
            return skipped(self, loaded, "no retain text to calibrate GPTQ on", started)
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, os.cpu_count() or 1)))
        group_size = self._group_size(loaded.model)
        try:
            with _scratch(ctx) as tmp, _inside(tmp):
                model, timings = self._quantize(loaded, texts, group_size, tmp)
            smoke_test(model, loaded, texts[0])
            import gptqmodel
            from gptqmodel.nn_modules.qlinear import BaseQuantLinear
        except Exception as exc:  # gptqmodel raises many kinds; any of them means "did not run"
            return skipped(self, loaded, f"GPTQ failed: {first_line(exc)}", started)
        layers = {name: module for name, module in model.named_modules() if isinstance(module, BaseQuantLinear)}
        if not layers:
            return skipped(self, loaded, "no quantized layer after GPTQ: the model was not quantized", started)
        model.eval()
        copy = LoadedModel(model, loaded.tokenizer, loaded.fingerprint, ModelSpec(variant_label(loaded, self)))
        applied = {
            "backend": f"gptqmodel {gptqmodel.__version__}",
            "bits": self.params["bits"],
            "group_size": group_size,
            "desc_act": self.params["desc_act"],
            "calibration_texts": len(texts),
            "module_type": sorted({type(module).__name__ for module in layers.values()}),
            "quantized_modules": len(layers),
        }
        cost = {"seconds_" + phase: round(seconds, 3) for phase, seconds in timings.items()}
        return outcome(self, loaded, [AttackedVariant(copy)], applied=applied, started=started, cost=cost)

    def _group_size(self, model: torch.nn.Module) -> int:
        """The asked group size, cut to the largest size that divides every layer's input width (kernels need it)."""
        widths = [linear.in_features for _, linear in quantizable_linears(model)]
        return math.gcd(self.params["group_size"], *widths)

    def _quantize(
        self, loaded: LoadedModel, texts: list[str], group_size: int, tmp: Path
    ) -> tuple[torch.nn.Module, dict[str, float]]:
        """Quantize a saved copy, save it, reload it through gptqmodel; time each phase."""
        from gptqmodel import GPTQModel, QuantizeConfig

        timings, clock = {}, time.perf_counter()
        save_model(loaded, tmp / "input")
        config = QuantizeConfig(bits=self.params["bits"], group_size=group_size, desc_act=self.params["desc_act"])
        model = GPTQModel.load(str(tmp / "input"), config, device=str(loaded.device))
        timings["load"], clock = time.perf_counter() - clock, time.perf_counter()
        model.quantize(texts, batch_size=8)
        timings["quantize"], clock = time.perf_counter() - clock, time.perf_counter()
        model.save(str(tmp / "quantized"))
        reloaded = GPTQModel.load(str(tmp / "quantized"), device=str(loaded.device))
        timings["save_reload"] = time.perf_counter() - clock
        return reloaded.model, timings
