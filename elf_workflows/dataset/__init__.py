"""Reference ELF datasets: the on-disk format (:mod:`.format`), builds with GPAW (:mod:`.build`) and
imports of VASP run folders (:mod:`.importer`)."""

from elf_workflows.dataset.format import DatasetWriter, ReferenceDataset, record_id

__all__ = ["DatasetWriter", "ReferenceDataset", "record_id"]
