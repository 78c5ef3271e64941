#!/usr/bin/env python3
"""Turns the JSON lines of `recur task ... --json` runs into the markdown tables of
docs/long-memory.md. Usage: summarize.py RUN.json [RUN.json ...]"""
import json
import sys


def solved(task, metric, baseline):
    """The issue's criteria, as `recur task` applies them."""
    if task == "adding":
        return metric < 0.01
    if task == "copy":
        return metric < 0.01 * baseline
    return metric < 0.5 * baseline


def first_solved(r):
    """First evaluated step whose held-out metric meets the criterion (None if never)."""
    for p in r["curve"]:
        if solved(r["task"], p["metric"], r["baseline"]):
            return p["step"]
    return None


print("| task | T | cell | H | steps | seconds | metric | baseline | metric / baseline | solved | first evaluation that met the criterion (step) | best held-out metric |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)
        first = first_solved(r)
        best = min(p["metric"] for p in r["curve"])
        print(
            f"| {r['task']} | {r['len']} | {r['cell']} | {r['hidden']} | {r['steps']} | {r['seconds']:.0f} "
            f"| {r['metric']:.3g} | {r['baseline']:.5f} | {r['metric'] / r['baseline']:.3g} "
            f"| {'yes' if r['solved'] else 'no'} | {first if first is not None else '-'} | {best:.3g} |"
        )
