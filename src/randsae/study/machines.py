"""The machine a study runs on, or is planned for: this one as measured (`this_machine`: its device, memory and
free disk) or one stated with --machine (`parse_machine`: N×GPU-MEMORY, disk=SIZE, …) with its GPUs' peak
rates."""

import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from randsae.errors import BadInput
from randsae.resources import available_memory, format_bytes

# dense bfloat16 peak FLOP/s per GPU, by the name a --machine gives (vendors' data sheets)
GPU_PEAK = {"A100": 312e12, "H100": 989e12, "H200": 989e12, "A10G": 125e12, "L4": 121e12, "L40S": 362e12,
            "V100": 125e12, "RTX4090": 165e12, "A6000": 155e12, "MI300X": 1307e12}

def parse_bytes(text: str, what: str) -> int:
    """'80GB', '2TB', '512MiB', '1.5T' → bytes (powers of 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGTP]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise BadInput(f"{what} must be a size such as 80GB or 2TB, not {text!r}.")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "BKMGTP".index((unit or "B").upper()))


@dataclass(frozen=True)
class Machine:
    """What a study runs on: `devices` of `kind` (one CPU counts as one device of its memory), each with
    `device_memory` bytes; `disk_free` bytes free where OUT lies; `stated` when --machine said so."""
    name: str
    kind: str  # "cpu" or "cuda"
    devices: int
    device_memory: int
    disk_free: int
    cores: int
    stated: bool = False
    peak_flops: float | None = None  # a stated GPU's, per device

    def describe(self) -> str:
        where = "stated" if self.stated else "this machine"
        disk = f"{format_bytes(self.disk_free)} free disk"
        if self.kind == "cpu":
            return f"{where}: {self.cores} CPU cores, {format_bytes(self.device_memory)} memory, {disk}"
        return f"{where}: {self.devices} × {self.name} ({format_bytes(self.device_memory)} each), {self.cores} " \
               f"CPU cores, {disk}"


def parse_machine(text: str) -> Machine:
    """--machine: `N×GPU-MEM` (e.g. 8xA100-80GB, 4xH100-80GB) or `cpu`, then `disk=SIZE`, `cores=N`, `memory=SIZE`
    (a CPU machine's), `peak=TFLOPS` (a GPU not in the table)."""
    first, *rest = [part.strip() for part in text.split(",") if part.strip()] or [""]
    options = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key not in ("disk", "cores", "memory", "peak"):
            raise BadInput(f"--machine {text!r}: {part!r} is not disk=SIZE, cores=N, memory=SIZE or peak=TFLOPS.")
        options[key] = value
    if "disk" not in options:
        raise BadInput(f"--machine {text!r} says no disk=SIZE (the free space where OUT would lie).")
    disk = parse_bytes(options["disk"], "--machine disk")
    cores = 16
    if "cores" in options:
        if not options["cores"].strip().isdigit() or int(options["cores"]) < 1:
            raise BadInput(f"--machine {text!r}: cores must be a positive whole number, not {options['cores']!r}.")
        cores = int(options["cores"])
    if first.lower() == "cpu":
        memory = parse_bytes(options.get("memory", "64GB"), "--machine memory")
        return Machine("CPU", "cpu", 1, memory, disk, cores, stated=True)
    match = re.fullmatch(r"(\d+)\s*[x×]\s*([A-Za-z0-9]+)-(\S+)", first)
    if not match:
        raise BadInput(f"--machine {text!r} must start with N×GPU-MEMORY (e.g. 8xA100-80GB) or cpu.")
    count, gpu, memory = int(match.group(1)), match.group(2).upper(), parse_bytes(match.group(3), "GPU memory")
    if "peak" in options:
        try:
            peak = float(options["peak"]) * 1e12
        except ValueError:
            peak = math.nan
        if not (math.isfinite(peak) and peak > 0):
            raise BadInput(f"--machine {text!r}: peak must be a positive number of TFLOP/s, not "
                           f"{options['peak']!r}.")
    elif gpu in GPU_PEAK:
        peak = GPU_PEAK[gpu]
    else:
        raise BadInput(f"--machine {text!r}: randsae does not know the {gpu}'s peak; add peak=TFLOPS (dense "
                       f"bfloat16), or name one of {', '.join(GPU_PEAK)}.")
    if count < 1:
        raise BadInput(f"--machine {text!r} has no GPU.")
    return Machine(f"{gpu}-{match.group(3)}", "cuda", count, memory, disk, cores, stated=True, peak_flops=peak)


def free_disk(out: Path) -> int:
    """Bytes free on the file system OUT is (or would be) on."""
    path = Path(out).expanduser().resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def this_machine(out: Path, device: str, ranks: int = 1) -> Machine:
    """The machine this process runs on, for a study on `device` (auto, cpu, cuda) with `ranks` ranks."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device != "cpu" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        memory = min(torch.cuda.get_device_properties(i).total_memory for i in range(count))
        return Machine(torch.cuda.get_device_name(0), "cuda", min(count, ranks) if ranks > 1 else count, memory,
                       free_disk(out), cores)
    return Machine("CPU", "cpu", 1, available_memory("cpu") or 0, free_disk(out), cores)


