"""The step-time cost model: the floor of the house (imports nothing from the simulator or the policies).

* `model`: `StepShape`, what one step computes, `step_shape`, its one builder from plain numbers, and
  `CostModel`, which prices a `StepShape` as draft, verify and overhead seconds,
* `coefficients`: forward-pass and drafting coefficients, and how one forward is priced,
* `calibration`: calibration JSON files (shipped in `calibrations/`), loading and saving,
* `architectures`: the one model registry (shapes, parameter counts, bytes); `hardware`: GPUs and the
  roofline; `policy_view`: a policy's linear view of a calibration.

`profile-gpu` and `build-calibration` write calibrations; the engine and the policies read them.
"""
from specdec_sim.costmodel.calibration import (CALIBRATION_DIR, DEFAULT_CALIBRATION, Calibration, CalibrationError,
                                               MemorySpec, available_calibrations, calibration_from_dict,
                                               check_step_times, load_calibration, save_calibration)
from specdec_sim.costmodel.coefficients import DraftCost, ForwardCoefficients, ValidRange
from specdec_sim.costmodel.model import (NO_PREFILL, OOM_STEP_TIME_S, CostModel, PrefillTerms, StepShape, StepTime,
                                         level_counts_of, prefill_terms, shape_from_levels, step_shape, uniform_shape)

__all__ = ["CALIBRATION_DIR", "DEFAULT_CALIBRATION", "Calibration", "CalibrationError", "MemorySpec",
           "available_calibrations", "calibration_from_dict", "check_step_times", "load_calibration",
           "save_calibration", "DraftCost", "ForwardCoefficients", "ValidRange", "OOM_STEP_TIME_S", "CostModel",
           "StepTime", "NO_PREFILL", "PrefillTerms",
           "StepShape", "level_counts_of", "prefill_terms", "shape_from_levels", "step_shape", "uniform_shape"]
