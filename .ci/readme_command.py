#!/usr/bin/env python3
"""Print the README's set-up-to-result command N (1: the main job, 2: the tests), verbatim; or, with
`--line-with TEXT`, the one line of the README's bash blocks that holds TEXT (e.g. the AG News run).

The two commands are the lines after the comments `# 1.` and `# 2.` in the README's first bash
block; CI runs what this prints, so the README and CI cannot drift apart.
"""

import re
import sys
from pathlib import Path

readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
block = re.search(r"```bash\n(.*?)```", readme, re.S)
if not block:
    sys.exit("readme_command: README.md has no bash block")
if sys.argv[1] == "--line-with":
    found = [line for b in re.findall(r"```bash\n(.*?)```", readme, re.S) for line in b.splitlines()
             if sys.argv[2] in line and not line.lstrip().startswith("#")]
    if len(found) != 1:
        sys.exit(f"readme_command: {len(found)} command lines with {sys.argv[2]!r} in README.md's bash blocks, expected 1")
    print(found[0])
    sys.exit(0)
lines = block.group(1).splitlines()
wanted = f"# {sys.argv[1]}."
for i, line in enumerate(lines):
    if line.startswith(wanted) and i + 1 < len(lines) and lines[i + 1].strip():
        print(lines[i + 1])
        break
else:
    sys.exit(f"readme_command: no command after '{wanted}' in README.md's first bash block")
