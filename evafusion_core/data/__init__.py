"""Training and evaluation data for the reward model: synthetic artifacts and the human-feedback format."""

from .synthetic import (
    ARTIFACT_WEIGHTS,
    ARTIFACTS,
    ArtifactSpec,
    SourcePair,
    SyntheticConfig,
    SyntheticRewardData,
    apply_artifacts,
    collate,
    dimension_maps,
    ladder,
    load_sources,
    scores_for,
    split_pairs,
)

__all__ = [
    "ARTIFACTS",
    "ARTIFACT_WEIGHTS",
    "ArtifactSpec",
    "SourcePair",
    "SyntheticConfig",
    "SyntheticRewardData",
    "apply_artifacts",
    "collate",
    "dimension_maps",
    "ladder",
    "load_sources",
    "scores_for",
    "split_pairs",
]
