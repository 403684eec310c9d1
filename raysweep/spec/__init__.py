"""The search space: YAML -> a typed, validated `SweepSpec`. Pure validation: importing this
package pulls in neither torch nor ray (a test checks), so bad input fails in seconds."""

from raysweep.spec.check import check, check_resources
from raysweep.spec.load import SPACES_DIR, load_space, local_resources, resolve
from raysweep.spec.names import NO_MIXTURE
from raysweep.spec.space import WARMUP_FRAC, ModelSpec, SpaceError, SweepSpec

__all__ = ["NO_MIXTURE", "SPACES_DIR", "WARMUP_FRAC", "ModelSpec", "SpaceError", "SweepSpec",
           "check", "check_resources", "load_space", "local_resources", "resolve"]
