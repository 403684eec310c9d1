"""The search space: YAML -> a typed, validated `SweepSpec`. Pure validation: importing this
package pulls in neither torch nor ray (a test checks), so bad input fails in seconds."""

from raysweep.spec.space import (SPACES_DIR, ModelSpec, SpaceError, SweepSpec, check,
                                 check_resources, load_space, local_resources)

__all__ = ["SPACES_DIR", "ModelSpec", "SpaceError", "SweepSpec", "check", "check_resources",
           "load_space", "local_resources"]
