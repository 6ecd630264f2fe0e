"""``python -m elf_workflows.cli``: the elf-workflows command line."""

import sys

from elf_workflows.cli import main

sys.exit(main())
