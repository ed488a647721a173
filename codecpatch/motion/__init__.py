"""Pure motion and residual algorithms over numpy arrays (no PyAV): block motion fields from codec
vectors, optical-flow fallback, residual-energy maps."""

from ._field import (
    MOTION_VECTOR_DTYPE,
    BlockMotion,
    block_motion_from_vectors,
    grid_shape_for,
    motion_magnitude,
)
from ._flow import OpticalFlowEstimator
from ._residual import (
    ResidualEstimator,
    block_mean,
    frame_difference,
    motion_compensated_residual,
    warp_by_block_field,
)

__all__ = [
    "MOTION_VECTOR_DTYPE",
    "BlockMotion",
    "OpticalFlowEstimator",
    "ResidualEstimator",
    "block_mean",
    "block_motion_from_vectors",
    "frame_difference",
    "grid_shape_for",
    "motion_compensated_residual",
    "motion_magnitude",
    "warp_by_block_field",
]
