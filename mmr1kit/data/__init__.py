"""Datasets: MMR1-format rows, loaders, prompt templates, dataset ordering and seeded synthetic tasks."""

from mmr1kit.data.loading import DatasetError, load_dataset, read_card
from mmr1kit.data.templates import ANSWER_TEMPLATES, QUESTION_TEMPLATES, SYSTEM_PROMPTS

__all__ = [
    "ANSWER_TEMPLATES",
    "QUESTION_TEMPLATES",
    "SYSTEM_PROMPTS",
    "DatasetError",
    "load_dataset",
    "read_card",
]
