"""Template strength: interstitial ELF attractors, ELF-basin electrons and the template score."""

from elf_workflows.templates.attractors import Attractor, find_attractors
from elf_workflows.templates.basins import Basins, watershed
from elf_workflows.templates.score import SCORE_FORMULA, TemplateScore, score_attractors, score_template

__all__ = ["Attractor", "Basins", "SCORE_FORMULA", "TemplateScore", "find_attractors", "score_attractors",
           "score_template", "watershed"]
