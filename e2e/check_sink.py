#!/usr/bin/env python3
"""check_sink.py SINK_LOG EXPECTED_DIR [--platform P | --only-platform P] [--pod-name N] [--no-file]

SINK_LOG: the sink container's stdout. EXPECTED_DIR holds what the app
wrote when run WITHOUT logtap: stdout, stderr, file (its log file).
Asserts that every sink line is a JSON object and that, per source, the
messages are exactly the expected lines in order: source "stdout" == the
app's stdout, "stderr" == its stderr, and FILE_SOURCE == its log file.
--platform P: every line must carry platform P; --only-platform P: only the
lines of platform P are checked (several apps shared the sink).
"""
import argparse
import json
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("sink_log")
ap.add_argument("expected_dir")
ap.add_argument("--file-source", default="var/log/legacy/app.log")
ap.add_argument("--platform")
ap.add_argument("--only-platform")
ap.add_argument("--pod-name")
ap.add_argument("--no-file", action="store_true", help="the app has no tapped log file (a static program through logtap-run)")
a = ap.parse_args()

errors = []
by_source = {}
objs = []
for n, line in enumerate(open(a.sink_log, encoding="utf-8", errors="replace"), 1):
    line = line.rstrip("\n")
    if not line:
        continue
    try:
        o = json.loads(line)
    except ValueError:
        errors.append(f"sink line {n} is not JSON: {line[:200]!r}")
        continue
    if not isinstance(o, dict) or "message" not in o or "source" not in o:
        errors.append(f"sink line {n} lacks message/source: {line[:200]!r}")
        continue
    if a.only_platform and o.get("platform") != a.only_platform:
        continue
    objs.append(o)
    by_source.setdefault(o["source"], []).append(o["message"])


def lines(name):
    p = os.path.join(a.expected_dir, name)
    data = open(p, encoding="utf-8").read() if os.path.exists(p) else ""
    return data.splitlines()


checked = [("stdout", "stdout"), ("stderr", "stderr")] + ([] if a.no_file else [(a.file_source, "file")])
for src, exp_name in checked:
    exp = lines(exp_name)
    got = by_source.get(src, [])
    if not exp:
        errors.append(f"baseline {exp_name} is empty: nothing to compare")
    if got != exp:
        errors.append(f"source {src!r}: sink has {len(got)} lines, the app wrote {len(exp)}")
        for i, (g, e) in enumerate(zip(got + [None] * len(exp), exp + [None] * len(got))):
            if g != e:
                errors.append(f"  first difference at line {i + 1}: sink {g!r} != app {e!r}")
                break
    else:
        print(f"check_sink: source {src!r}: {len(got)} lines, identical to the app's {exp_name}")
other = set(by_source) - {src for src, _ in checked}
if other:
    errors.append(f"unexpected sources: {sorted(other)} (e.g. a logtap drop notice)")
for o in objs:
    if a.platform and o.get("platform") != a.platform:
        errors.append(f"platform {o.get('platform')!r} != {a.platform!r}")
        break
    if a.pod_name and o.get("pod_name") != a.pod_name:
        errors.append(f"pod_name {o.get('pod_name')!r} != {a.pod_name!r}")
        break
if errors:
    print("check_sink: FAIL", *errors, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"check_sink: {len(objs)} JSON lines OK")
