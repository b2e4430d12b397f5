"""Runs the benchmark suites through ordo-one/benchmark and reads back what they measured.

The tool exports every benchmark's samples (`--format histogramSamples`): one file per benchmark and
metric, a header line naming the metric and its unit, then one value per iteration. Each benchmark
carries an `operations` tag (see BenchmarkSupport/Configuration.swift), so a sample divided by it
is a figure per operation.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tool prints a count of 10,000 or more in thousands ("(K)"), and so on up.
COUNT_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}
TIME_UNITS = {"ns": 1, "μs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
FILE_PATTERN = re.compile(r"^Current_run\.([^.]+)\.(.*)_\(operations:_(\d+)\)\.([^.]+)\.histogram\.samples\.tsv$")


@dataclass
class Result:
    """One benchmark's samples, per operation, by metric."""

    target: str
    name: str
    operations: int
    samples: dict = field(default_factory=dict)  # metric -> [value per operation]

    @property
    def key(self):
        return f"{self.target}: {self.name}"


# Where the timed passes build: without the malloc-counting interposer, beside the build that has it.
TIMED_BUILD = os.path.join(PACKAGE, ".build-timed")


def run_suites(quick, metrics=(), targets=(), log=None, time_only=False, filters=()):
    """Runs the suites (all, or `targets`; within them all benchmarks, or those whose name matches
    one of the regular expressions `filters`) and returns {key: Result}; exits if the tool fails.
    `time_only`: the benchmarks time their operations and do not count allocations, built without
    the malloc-counting interposer (in a build folder of their own, `TIMED_BUILD`), so that every
    allocation and free is glibc's own: the interposer adds a call and a 16-byte header to each,
    counting or not, and the header moves objects into larger heap chunks."""
    export = tempfile.mkdtemp(prefix="taskmachine-benchmarks-")
    try:
        command = ["swift", "package", "--disable-sandbox"]
        if time_only:
            command += ["--scratch-path", TIMED_BUILD]
        command += ["benchmark", "--no-progress", "--format", "histogramSamples", "--path", export]
        for metric in metrics:
            command += ["--metric", metric]
        for target in targets:
            command += ["--target", target]
        for pattern in filters:
            command += ["--filter", pattern]
        environment = dict(os.environ)
        if quick:
            environment["TASKMACHINE_BENCHMARK_QUICK"] = "1"
        if time_only:
            environment["TASKMACHINE_BENCHMARK_TIME_ONLY"] = "1"
            # Read by Package.swift, which then enables none of the benchmark tool's traits, so
            # not `MallocInterposer` (the tool's own default traits, which also read it, do not
            # apply: Package.swift names the traits it enables).
            environment["BENCHMARK_DISABLE_MALLOC_INTERPOSER"] = "1"
        else:
            # A counting pass needs the interposer, whatever the caller's shell exports: built
            # without it, every count would read as nothing, and the allocation gate would write
            # those figures back as new thresholds.
            environment.pop("BENCHMARK_DISABLE_MALLOC_INTERPOSER", None)
        completed = subprocess.run(command, cwd=PACKAGE, env=environment, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        if log:
            with open(log, "w") as file:
                file.write(completed.stdout)
        if completed.returncode != 0:
            sys.stdout.write(completed.stdout[-6000:])
            sys.exit(f"the benchmark tool failed (exit status {completed.returncode})")
        return read_export(export)
    finally:
        shutil.rmtree(export, ignore_errors=True)


def read_export(folder):
    results, untagged = {}, []
    for file_name in sorted(os.listdir(folder)):
        match = FILE_PATTERN.match(file_name)
        if not match:
            if file_name.endswith(".histogram.samples.tsv"):
                untagged.append(file_name)
            continue
        target, name, operations, metric = match.groups()
        # The tool writes spaces as underscores in file names; the names here have none of their own.
        result = Result(target, name.replace("_", " "), int(operations))
        result = results.setdefault(result.key, result)
        with open(os.path.join(folder, file_name)) as file:
            header, *values = file.read().split("\n")
        factor = unit_factor(header)
        result.samples[metric] = [float(value) * factor / result.operations for value in values if value.strip()]
    # A benchmark without an operations tag cannot be read per operation; skipped, it would never
    # be checked against a threshold nor added to the file.
    if untagged:
        sys.exit("benchmarks without an operations tag (make their configuration with "
                 "BenchmarkSupport's configuration(_:)):\n  " + "\n  ".join(untagged))
    return results


def unit_factor(header):
    """The multiplier that turns the header's unit into counts or nanoseconds."""
    unit = re.search(r"\(([^()]*)\)\s*$", header.strip())
    unit = unit.group(1) if unit and not header.strip().endswith("(total)") else ""
    if unit in TIME_UNITS:
        return TIME_UNITS[unit]
    return COUNT_UNITS.get(unit, 1)


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
