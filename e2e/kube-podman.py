#!/usr/bin/env python3
"""kube-podman.py IN OUT [NODE [emptydir=DIR] [CONTAINER:VAR=VALUE...]]: rewrite a Kubernetes manifest
for podman 4.3's `podman kube play`, changing only what that podman cannot do:

- native sidecars (an init container with `restartPolicy: Always`,
  Kubernetes >= 1.29) are unknown to it: it waits for every init container
  to exit, so the sink would block the pod forever. They become the first
  regular containers (started before the app, as in Kubernetes).
- downward-API fieldPaths other than metadata.name/labels/annotations
  (metadata.namespace, spec.nodeName...) are refused ("not valid or not
  supported"): they become literal values (namespace "podman", node NODE).
- the pod's restartPolicy (Always, as a Deployment requires) is applied by
  podman 4.3 to init containers too: the injector would be restarted in a
  loop (the racy removal noted in platform.md comes from this). It becomes
  OnFailure, which also lets the test see the app's exit code.

- emptyDir volumes: Kubernetes creates them mode 0777, group fsGroup with
  setgid, so every container of the pod can write; podman makes a volume
  owned by whichever container mounts it first (the app, if it wins the
  race, and then the non-root sink cannot bind its socket). With
  emptydir=DIR each becomes a hostPath DIR/<name> made here as Kubernetes
  makes it (root, group fsGroup, mode 2777); sizeLimit is dropped.

CONTAINER:VAR=VALUE sets an environment variable of a container (the test
gives the long-running demo app a finite run). Everything else (images, env, mounts, securityContext...) is unchanged, so
what runs is the deployment under test.
"""
import os
import sys
import yaml

SUPPORTED = {"metadata.name", "metadata.labels", "metadata.annotations", "metadata.uid"}


def fix_env(container, node):
    for e in container.get("env", []) or []:
        ref = (e.get("valueFrom") or {}).get("fieldRef")
        if ref and ref.get("fieldPath") not in SUPPORTED:
            path = ref["fieldPath"]
            e.pop("valueFrom")
            e["value"] = {"metadata.namespace": "podman", "spec.nodeName": node}.get(path, "")


def main():
    src, dst = sys.argv[1], sys.argv[2]
    node = sys.argv[3] if len(sys.argv) > 3 else "localhost"
    overrides = {}
    emptydir = None
    for arg in sys.argv[4:]:
        if arg.startswith("emptydir="):
            emptydir = arg.partition("=")[2]
            continue
        cname, _, kv = arg.partition(":")
        var, _, value = kv.partition("=")
        overrides.setdefault(cname, {})[var] = value
    docs = list(yaml.safe_load_all(open(src)))
    for doc in docs:
        if not doc or doc.get("kind") not in ("Deployment", "Pod"):
            continue
        spec = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
        spec["restartPolicy"] = "OnFailure"
        if emptydir:
            group = (spec.get("securityContext") or {}).get("fsGroup")
            for v in spec.get("volumes", []) or []:
                if "emptyDir" in v:
                    path = os.path.join(emptydir, v["name"])
                    os.makedirs(path, exist_ok=True)
                    if group is not None:
                        os.chown(path, 0, group)
                    os.chmod(path, 0o2777 if group is not None else 0o777)
                    v.pop("emptyDir")
                    v["hostPath"] = {"path": path, "type": "Directory"}
        inits, sidecars = [], []
        for c in spec.get("initContainers", []) or []:
            (sidecars if c.get("restartPolicy") == "Always" else inits).append(c)
        for c in sidecars:
            c.pop("restartPolicy")
        spec["initContainers"] = inits
        spec["containers"] = sidecars + spec["containers"]
        for c in spec["initContainers"] + spec["containers"]:
            fix_env(c, node)
            for var, value in overrides.get(c["name"], {}).items():
                env = c.setdefault("env", [])
                env[:] = [e for e in env if e["name"] != var] + [{"name": var, "value": value}]
    with open(dst, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)


if __name__ == "__main__":
    main()
