"""Human feedback: ratings and pairwise preferences recorded safely, summarised, exported, trained on."""

from .dataset import FeedbackTrainingData, export_feedback_hf, pooled_items, split_of
from .stats import feedback_stats, format_stats
from .store import CHOICES, DIMENSIONS, FeedbackError, FeedbackStore, item_hash

__all__ = [
    "CHOICES",
    "DIMENSIONS",
    "FeedbackError",
    "FeedbackStore",
    "FeedbackTrainingData",
    "export_feedback_hf",
    "feedback_stats",
    "format_stats",
    "item_hash",
    "pooled_items",
    "split_of",
]
