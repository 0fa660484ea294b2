# Python output paths: print to stdout/stderr, sys.stdout.write, logging to
# a FileHandler on the tap file (LOGFILE). Deterministic output.
import logging
import os
import sys

mode = sys.argv[1] if len(sys.argv) > 1 else "all"

for i in range(300):
    print("print stdout", i, "\u00e9\u2713")
    if i % 3 == 0:
        print("print stderr", i, file=sys.stderr)
sys.stdout.write("sys.stdout.write without newline")
sys.stdout.flush()
sys.stdout.write("\n")
sys.stderr.write("sys.stderr.write\n")

log = logging.getLogger("app")
log.setLevel(logging.DEBUG)
h = logging.FileHandler(os.environ["LOGFILE"])
h.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
log.addHandler(h)
for i in range(200):
    log.info("logging info %d", i)
    log.warning("logging warning %d", i)
sys.stdout.flush()
os.write(1, b"os.write(1)\n")
print("buffered at exit", end="")
