#!/usr/bin/env python3
"""readme_block.py README NAME: print the shell block that follows the line
`<!-- e2e: NAME -->` in README, so the tests run the README's commands
exactly as a reader would copy them (fails if the marker or block is missing)."""
import sys

path, name = sys.argv[1], sys.argv[2]
lines = open(path, encoding="utf-8").read().splitlines()
marker = f"<!-- e2e: {name} -->"
try:
    i = lines.index(marker)
except ValueError:
    sys.exit(f"readme_block: no '{marker}' in {path}")
if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
    sys.exit(f"readme_block: '{marker}' is not followed by a code block")
end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
if end is None:
    sys.exit(f"readme_block: the block after '{marker}' is not closed")
print("\n".join(lines[i + 2 : end]))
