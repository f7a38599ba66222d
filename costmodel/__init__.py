"""The step-time cost model: the floor of the house (imports nothing from the simulator or the policies).

* `shape`: `StepShape`, what one step computes, and `step_shape`, its one builder from plain numbers,
* `coefficients`: forward-pass and drafting coefficients, and how one forward is priced,
* `calibration`: calibration JSON files (shipped in `calibrations/`), loading and saving,
* `model`: `CostModel`, which prices a `StepShape` as draft, verify and overhead seconds.

`profile-gpu` writes calibrations; the engine and the policies read them.
"""
from specdec_sim.costmodel.calibration import (CALIBRATION_DIR, DEFAULT_CALIBRATION, Calibration, CalibrationError,
                                               MemorySpec, available_calibrations, calibration_from_dict,
                                               check_step_times, load_calibration, save_calibration)
from specdec_sim.costmodel.coefficients import DraftCost, ForwardCoefficients, ValidRange
from specdec_sim.costmodel.model import OOM_STEP_TIME_S, CostModel, StepTime
from specdec_sim.costmodel.shape import (NO_PREFILL, PrefillTerms, StepShape, level_counts_of, prefill_terms,
                                         shape_from_levels, step_shape, uniform_shape)

__all__ = ["CALIBRATION_DIR", "DEFAULT_CALIBRATION", "Calibration", "CalibrationError", "MemorySpec",
           "available_calibrations", "calibration_from_dict", "check_step_times", "load_calibration",
           "save_calibration", "DraftCost", "ForwardCoefficients", "ValidRange", "OOM_STEP_TIME_S", "CostModel",
           "StepTime", "NO_PREFILL", "PrefillTerms",
           "StepShape", "level_counts_of", "prefill_terms", "shape_from_levels", "step_shape", "uniform_shape"]
