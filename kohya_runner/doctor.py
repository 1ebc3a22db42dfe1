"""`kr doctor`: is this machine ready to train with sd-scripts (or kr's built-in tiny trainer, for a
plan on `--base tiny`), offline? One small function per check.

Each check returns a Check(name, status, detail, fix) with status ok | warn | fail; `kr doctor`
exits 1 when any check fails. The facts a check needs (the trainer environment's versions, the
GPUs NVML sees, free disk space) are gathered once and passed in, so every check can also be
exercised with facts a test makes up (a GPU, a full disk).

Checks: the trainer's python, torch and its CUDA build; GPUs and free VRAM; the sd-scripts pin and
the checkout's integrity; the offline tokenizer folders; the base model's architecture against the
preset; the dataset; disk space for the planned outputs; that the trainer's python really runs
offline; an accelerate default config that could change devices; the optimizer's package (bitsandbytes,
prodigyopt, …) in the trainer's python. On the tiny backend only what it uses is checked: kr's own
python with the demo extra, the tiny base, the optimizer, dataset, disk and offline. `smoke()` trains 4 real steps at
64 px through kr's own run pipeline and reports it/s and peak memory from the ledger.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import BadInput, KrError
from .sdscripts import cache_files
from .tokenizers import folder_for

OK, WARN, FAIL = "ok", "warn", "fail"
GIB = 2**30
TORCH_MIN = (2, 6)  # contract: PyTorch >= 2.6
SD_SCRIPTS_PYTHON = ((3, 10), (3, 11), (3, 12))  # README: 3.10 (3.11 / 3.12 "should work")
DISK_MARGIN = 2 * GIB
ASSUMED_IMAGES = 50  # no --dataset: the top of the presets' 24-50 images
SMOKE_STEPS = 4
SMOKE_SIZE = 64


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Gpu:
    index: int
    name: str
    total: int
    free: int


@dataclass
class TrainerInfo:
    """The trainer environment as kohya_runner.vendoring finds it (KR_SD_PYTHON, else kr's venv)."""
    python: str | None = None
    python_version: str | None = None
    torch: str | None = None
    cuda: str | None = None
    error: str | None = None


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    smoke: dict | None = None

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAIL]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks], "smoke": self.smoke}


def _gib(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"


def _version_tuple(text: str | None) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", (text or "").split("+")[0])
    return tuple(int(n) for n in numbers[:3])


# ----------------------------------------------------------------------------------------------
# Facts.


def gpu_inventory() -> list[Gpu]:
    """The NVIDIA GPUs NVML sees, with free memory; [] without a driver.

    Raises nothing.
    """
    from .gpus import nvml

    pynvml = nvml()
    if pynvml is None:
        return []
    gpus = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(Gpu(index, name.decode() if isinstance(name, bytes) else str(name), int(memory.total),
                            int(memory.free)))
    except Exception:
        pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus


def trainer_info(home: Path) -> TrainerInfo:
    """The trainer python kr would use and its versions; problems land in .error. Raises nothing."""
    from . import vendoring as vendor

    try:
        python = vendor.find_trainer_python(home)
    except BadInput as error:
        return TrainerInfo(error=error.message)
    if python is None:
        return TrainerInfo()
    queried = vendor.python_facts(python)
    return TrainerInfo(str(python), queried.get("python_version"), queried.get("torch"), queried.get("cuda"),
                       queried.get("error"))


def free_bytes(path: Path) -> tuple[int, Path]:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent).

    Raises nothing.
    """
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


def accelerate_config_paths() -> list[Path]:
    """accelerate's default config files: $HF_HOME/accelerate/default_config.{yaml,json} (contract §1.2).

    Raises nothing.
    """
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    folder = Path(hf_home).expanduser() / "accelerate"
    return [folder / "default_config.yaml", folder / "default_config.json"]


# ----------------------------------------------------------------------------------------------
# The checks.

_NO_ENV_FIX = "`kr vendor env` (or `kr vendor install --bundle FILE` offline), or set KR_SD_PYTHON to its python"


def check_trainer_python(info: TrainerInfo) -> Check:
    """Raises nothing: every check reports problems as its Check's status."""
    name = "trainer python"
    if info.error and not info.python:
        return Check(name, FAIL, info.error, "point KR_SD_PYTHON at the trainer environment's python, or unset it")
    if not info.python:
        return Check(name, FAIL, "no trainer environment (a venv with sd-scripts' requirements)", _NO_ENV_FIX)
    if not info.python_version:
        return Check(name, FAIL, f"{info.python} does not run: {info.error or 'no answer'}",
                     "rebuild it: `kr vendor env --force`")
    version = _version_tuple(info.python_version)[:2]
    if version == SD_SCRIPTS_PYTHON[0]:
        return Check(name, OK, f"{info.python}: Python {info.python_version}")
    if version in SD_SCRIPTS_PYTHON:
        return Check(name, OK, f"{info.python}: Python {info.python_version} (sd-scripts targets 3.10; this should work)")
    return Check(name, WARN, f"{info.python}: Python {info.python_version}, which sd-scripts does not support (3.10-3.12)",
                 "rebuild it with Python 3.10: `kr vendor env --python python3.10 --force`")


def check_torch(info: TrainerInfo) -> Check:
    """Raises nothing."""
    name = "torch"
    if not info.python_version:
        return Check(name, FAIL, "not checked: there is no working trainer python", _NO_ENV_FIX)
    if not info.torch:
        return Check(name, FAIL, f"torch is not installed in {info.python}",
                     "`kr vendor env --force` installs torch first, then sd-scripts' requirements")
    if _version_tuple(info.torch)[:2] < TORCH_MIN:
        return Check(name, FAIL, f"torch {info.torch}; sd-scripts needs torch >= {'.'.join(map(str, TORCH_MIN))}",
                     "`kr vendor env --force --torch 'torch==2.14.1 torchvision==0.29.1'`")
    return Check(name, OK, f"torch {info.torch}")


def check_cuda(info: TrainerInfo, gpus: list[Gpu]) -> Check | None:
    """None when there is no torch to ask (check_torch already failed).

    Raises nothing.
    """
    name = "CUDA"
    if not info.torch:
        return None
    if gpus and not info.cuda:
        return Check(name, FAIL, f"torch {info.torch} is a CPU build, but this machine has {len(gpus)} NVIDIA GPU(s): "
                     "training would silently run on the CPU", "`kr vendor env --force` picks the CUDA build for this machine")
    if gpus:
        return Check(name, OK, f"CUDA {info.cuda} build of torch; the driver sees {len(gpus)} GPU(s)")
    if info.cuda:
        return Check(name, WARN, f"a CUDA {info.cuda} build of torch, but no NVIDIA GPU or driver was found (NVML)",
                     "check `nvidia-smi`; without a GPU training runs on the CPU (smoke tests only)")
    return Check(name, WARN, "CPU build of torch and no NVIDIA GPU: training runs on the CPU (fine for `kr doctor "
                 "--smoke`, far too slow for real runs)", "train on a machine with an NVIDIA GPU")


TINY_NEEDS = ("torch", "diffusers", "transformers", "peft", "safetensors")


def check_tiny_trainer() -> Check:
    """The built-in tiny trainer runs on kr's own python and needs the `[demo]` extra. Raises nothing."""
    from .trainers.packages import available_here

    name = "tiny trainer"
    missing = [module for module in TINY_NEEDS if not available_here(module)]
    where = f"{sys.executable}: Python {sys.version.split()[0]}"
    if missing:
        return Check(name, FAIL, f"{where} lacks {', '.join(missing)}, which the built-in tiny trainer needs",
                     "`pip install torch --index-url https://download.pytorch.org/whl/cpu` then "
                     "`pip install -e '.[demo]'` (in kr's environment)")
    return Check(name, OK, f"{where}, with {', '.join(TINY_NEEDS)} (kr's own environment; CPU)")


OPTIONAL_OPTIMIZER_MODULES = ("bitsandbytes", "prodigyopt", "dadaptation", "lion_pytorch", "schedulefree")


def check_optimizer(spec, python: str | None, backend: str) -> Check | None:
    """Whether the trainer's python can import the package the planned optimizer needs (AdamW8bit →
    bitsandbytes, Prodigy → prodigyopt, …): sd-scripts would fail on it only after caching. Without a
    preset, which optional optimizer packages are there. None when there is no python to ask.
    Raises nothing."""
    from .trainers.packages import missing_modules, module_for, pip_name

    name = "optimizer"
    python = sys.executable if backend == "tiny" else python
    if not python:
        return None
    if spec is None:
        missing = missing_modules(python, OPTIONAL_OPTIMIZER_MODULES)
        if missing is None:
            return None
        present = [pip_name(m) for m in OPTIONAL_OPTIMIZER_MODULES if m not in missing]
        absent = [pip_name(m) for m in missing]
        return Check(name, OK, f"optional optimizer packages in {python}: "
                     f"{', '.join(present) or 'none'} installed; {', '.join(absent) or 'none'} not "
                     "(AdamW8bit/Paged*/Lion8bit need bitsandbytes, Prodigy prodigyopt, DAdapt* dadaptation, "
                     "Lion lion-pytorch, *ScheduleFree schedulefree)")
    wanted = spec.optimizer.type
    module = module_for(wanted)
    if module is None:
        return Check(name, OK, f"{wanted}: built into torch/transformers")
    missing = missing_modules(python, [module])
    if missing is None:
        return Check(name, WARN, f"{wanted} needs {pip_name(module)}; {python} could not be asked",
                     "check the trainer environment (`kr vendor status`)")
    if backend == "tiny":
        if missing or wanted.lower().endswith("schedulefree"):
            from .trainers.tiny import stand_in

            why = f"{pip_name(module)} is not installed in kr's environment" if missing else "not in the tiny trainer"
            return Check(name, OK, f"{wanted}: {why}, so the tiny trainer uses {stand_in(wanted)} instead (with a "
                         "note); sd-scripts runs it as written")
        return Check(name, OK, f"{wanted}: {pip_name(module)} is installed in {python}")
    if missing:
        return Check(name, FAIL, f"optimizer.type = {wanted} needs {pip_name(module)}, which the trainer's python "
                     f"{python} cannot import: sd-scripts would fail after caching",
                     f"`{python} -m pip install {pip_name(module)}`, or choose another optimizer, e.g. "
                     "optimizer.type=AdamW")
    return Check(name, OK, f"{wanted}: {pip_name(module)} is installed in {python}")


def parse_vram(text: str | None) -> int | None:
    """A preset header's `vram = "24 GB"` in bytes; None for "none (CPU)" or no header.

    Raises nothing.
    """
    match = re.match(r"\s*(\d+(?:\.\d+)?)\s*GB", text or "", re.I)
    return int(float(match.group(1)) * GIB) if match else None


def check_gpus(gpus: list[Gpu], need: int | None = None, gpu: int = 0) -> Check:
    """Raises nothing."""
    name = "GPU"
    if not gpus:
        return Check(name, WARN, "no NVIDIA GPU found (NVML): kr runs train on the CPU",
                     "install the NVIDIA driver (nvidia-smi must list the GPU)")
    listing = "; ".join(f"{g.index}: {g.name}, {_gib(g.free)} free of {_gib(g.total)}" for g in gpus)
    chosen = next((g for g in gpus if g.index == gpu), None)
    if chosen is None:
        return Check(name, FAIL, f"GPU {gpu} does not exist ({listing})", "pick one that exists with --gpu N")
    if need and chosen.free < need:
        return Check(name, FAIL, f"GPU {chosen.index} has {_gib(chosen.free)} free; the run needs about {_gib(need)} "
                     f"({listing})", "`kr run --fit` picks the fastest memory setting that fits; or a smaller preset "
                     "(sdxl-12gb, sdxl-8gb), close what else uses the GPU (nvidia-smi), or pick another with --gpu N")
    wanted = f"; the run needs about {_gib(need)}" if need else ""
    return Check(name, OK, listing + wanted)


def check_memory(home: Path, spec):
    """(the check, the Estimate or None): the run's estimated peak memory (kohya_runner.memory). Raises nothing."""
    from . import memory

    try:
        found = memory.for_run(home, spec)
    except Exception as error:  # the estimate is advice: never the reason doctor fails
        return Check("memory", WARN, f"cannot estimate the peak memory: {error}"), None
    return Check("memory", OK, f"peak {found.text()}"), found


def check_sd_scripts(home: Path) -> Check:
    """Raises nothing."""
    from . import vendoring as vendor

    name = "sd-scripts"
    try:
        pin = vendor.load_pin()
        checkout = vendor.find_sd_scripts(home)
    except KrError as error:
        return Check(name, FAIL, error.message, "unset KR_SD_SCRIPTS or point it at a checkout")
    if checkout is None:
        return Check(name, FAIL, f"not installed ({vendor.default_sd_scripts_dir(home)} does not exist)",
                     f"`kr vendor install --from PATH|TARBALL` of commit {pin.short} (or --bundle FILE, or --git)")
    result = vendor.verify(checkout, expected_tree=pin.tree)
    if result.ok:
        return Check(name, OK, f"{checkout}: {pin.short} (v{pin.version}), git tree {result.tree[:12]} = the pin")
    differ = result.changed + result.missing + result.added
    named = f"; differs in {', '.join(differ[:5])}{' …' if len(differ) > 5 else ''}" if differ else ""
    detail = f"{checkout} is not the pinned tree {pin.tree[:12]} (it is {result.tree[:12]}){named}"
    if os.environ.get("KR_SD_SCRIPTS"):  # the user chose this checkout: say so, do not block on it
        return Check(name, WARN, detail + " (KR_SD_SCRIPTS)", "unset KR_SD_SCRIPTS to use kr's verified install")
    return Check(name, FAIL, detail, "`kr vendor verify` names every file; reinstall: `kr vendor install --from "
                 "PATH|TARBALL --force`")


def check_tokenizers(cache_dir: Path, family: str = "sdxl") -> Check:
    """Raises nothing."""
    from .tokenizers import CLIP_BIGG, CLIP_L, tokenizer_status

    name = "tokenizers"
    status = tokenizer_status(cache_dir)
    wanted = [CLIP_L] + ([CLIP_BIGG] if family == "sdxl" else [])
    fix = "`kr vendor tokenizers --source open_clip_torch-*.whl` (a wheel from `pip download --no-deps open-clip-torch`)"
    missing = []
    for spec in wanted:
        info = status["folders"][spec.folder]
        if not info["present"] or info["missing_files"] or info["vocab_size"] is None:
            missing.append(spec.folder)
    if missing:
        return Check(name, FAIL, f"{cache_dir} lacks {', '.join(missing)}: sd-scripts would try the Hub and fail offline",
                     fix)
    big_g = status["folders"][CLIP_BIGG.folder]
    if family == "sdxl" and big_g["pad_token"] == "!":
        return Check(name, FAIL, f"{cache_dir / CLIP_BIGG.folder} declares '!' as its pad token (an older kr wrote it): "
                     "every '!' in a caption would become a pad token", "rebuild it: " + fix)
    return Check(name, OK, f"{cache_dir}: {', '.join(spec.folder for spec in wanted)}")


def check_base(base: str, home: Path, family: str | None) -> Check:
    """Raises nothing (a base that does not fit is a failed Check)."""
    from . import bases, workspace

    name = "base model"
    if base == "tiny":
        folder = workspace.tiny_base_dir(home, family or "sdxl")
        if not (folder / "model_index.json").is_file():
            return Check(name, OK, f"kr's tiny {family or 'sdxl'} base: not built yet; the first `kr run --base tiny` "
                         f"(or `kr demo`, `kr base tiny`) builds it in {folder}")
        return Check(name, OK, f"kr's tiny {family or 'sdxl'} base (built-in tiny trainer)")
    try:
        info = bases.detect_architecture(Path(base).expanduser())
        if family:
            bases.check_base_matches(info, family)
        elif info.family == "unknown":
            raise BadInput(f"{info.path} is not a base model sd-scripts trains: {info.reason}")
    except BadInput as error:
        return Check(name, FAIL, error.message, "pass --base with a full SDXL or SD1.5 checkpoint (or pick a preset of "
                     "the base's family)")
    size = f", {info.tensor_count} tensors" if info.tensor_count else ""
    detail = f"{info.path}: {bases.FAMILY_LABELS[info.family]} ({info.format}{size})"
    if info.kr_tiny:
        return Check(name, WARN, detail + ", a kr tiny base: only the built-in tiny trainer can load it",
                     "use a full-size base with sd-scripts (`kr base random sd15` makes a random one)")
    return Check(name, OK, detail)


def check_dataset(home: Path, spec) -> Check:
    """Raises nothing."""
    from .run import check_dataset as run_check

    name = "dataset"
    try:
        report = run_check(home, spec)
    except BadInput as error:
        return Check(name, FAIL, error.message, "pass --dataset with the folder of images and captions")
    if not report.ok:
        shown = "; ".join(f"{f.file or report.dir.name}: {f.message}" for f in report.errors[:3])
        return Check(name, FAIL, f"{len(report.errors)} error(s) in {report.dir}: {shown}",
                     f"`kr dataset check {report.dir}` lists each with its fix")
    detail = f"{report.dir}: {report.images} images, {report.captions} captions"
    if report.warnings:
        return Check(name, WARN, f"{detail}, {len(report.warnings)} warning(s)", f"`kr dataset check {report.dir}`")
    return Check(name, OK, detail)


def planned_bytes(spec, images: int) -> tuple[int, str]:
    """(bytes, what) a run of `spec` writes: LoRA checkpoints, samples, state folders, latent/TE caches.

    Raises nothing.
    """
    from . import dataset

    math_ = dataset.step_math(max(1, images * spec.dataset.repeats), spec.dataset.batch_size, dataset.plan_from_spec(spec))
    total = math_.disk_bytes
    parts = [f"{len(math_.files_kept)} LoRA file(s) of {_gib(math_.lora.bytes)}"]
    states = len(math_.files_kept) if spec.saving.state else (1 if spec.saving.state_on_train_end else 0)
    if states:
        state = math_.lora.parameters * 12  # fp32 weights + AdamW's two moments
        total += states * state
        parts.append(f"{states} state folder(s)")
    if cache_files.latents_on_disk(spec):
        w, h = spec.dataset.resolution
        latent = 4 * (w // 8) * (h // 8) * 4 * (2 if spec.dataset.flip_aug else 1)
        te = (77 * 768 + 77 * 1280 + 1280) * 4 if cache_files.te_on_disk(spec) else 0
        total += images * (latent + te)
        parts.append(f"caches for {images} images")
    return total, ", ".join(parts)


def check_disk(where: Path, needed: int, what: str, free: int | None = None) -> Check:
    """Raises nothing."""
    name = "disk space"
    found, mount = free_bytes(where) if free is None else (free, where)
    detail = f"{_gib(found)} free at {mount}; planned: {_gib(needed)} ({what})"
    fix = "free space there, or point KR_HOME at a larger disk (fewer saved checkpoints: saving.last_n_epochs)"
    if found < needed:
        return Check(name, FAIL, detail, fix)
    if found < needed + DISK_MARGIN:
        return Check(name, WARN, detail + f", less than {_gib(DISK_MARGIN)} to spare", fix)
    return Check(name, OK, detail)


WORKSPACE_FLOOR = 16 * 2**20  # the run folder's own files beside the outputs: config, log, archive, ledger


def workspace_space_check(home: Path, spec, images: int | None = None) -> None:
    """Refuse, before anything is created, a run whose outputs (planned_bytes) do not fit on the
    workspace's disk, or a workspace on a read-only filesystem. `images`: the dataset's image count
    (counted in spec.dataset.dir when not given). Raises BadInput naming the workspace and the fix."""
    from . import workspace

    runs = workspace.runs_dir(home)
    free, mount = free_bytes(runs)
    fix = "Fix: free space there, or use --home elsewhere"
    if _read_only(mount):
        raise BadInput(f"the workspace {home} is on a read-only filesystem ({mount}); nothing was launched. {fix} "
                       "(reading runs still works)")
    images = _count_images(spec.dataset.dir) if images is None else images
    needed, what = 0, "the run folder's files"
    if spec.model.base != "tiny":  # the built-in tiny model's files are kilobytes, whatever the preset says
        try:
            needed, what = planned_bytes(spec, images)
        except (KrError, ValueError, ArithmeticError):  # an estimate must not stop a run the trainer would accept
            pass
    needed += WORKSPACE_FLOOR
    if free < needed:
        raise BadInput(f"not enough free space for this run in the workspace {home}: {_gib(free)} free at {mount}, "
                       f"the run writes about {_gib(needed)} ({what}); nothing was launched. {fix} (or save fewer "
                       "checkpoints: saving.last_n_epochs)")


def _read_only(path: Path) -> bool:
    """The filesystem holding `path` is mounted read-only (root ignores permissions, so ask the mount)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


_OFFLINE_QUERY = r"""
import json, os
keys = %s
out = {"env": {k: os.environ.get(k) for k in keys}, "hub_offline": None}
try:
    import huggingface_hub.constants as constants
    out["hub_offline"] = bool(constants.HF_HUB_OFFLINE)
except Exception:
    pass
print(json.dumps(out))
"""


def check_offline(python: str | None, scratch: Path) -> Check:
    """Start the trainer's python with the environment kr gives it and ask whether it is offline.

    A sitecustomize, usercustomize or .pth file in that environment can change variables after kr set
    them; huggingface_hub is asked too, when it is installed there.
    Raises nothing.
    """
    from .sdscripts.environment import OFFLINE_ENV
    from .trainers import Launch, full_env, trainer_env

    name = "offline"
    python = python or sys.executable
    wanted = {k: v for k, v in OFFLINE_ENV.items() if k != "COLUMNS"}
    env = full_env(Launch("sd-scripts", [], scratch, trainer_env(None)))
    try:
        result = subprocess.run([python, "-c", _OFFLINE_QUERY % json.dumps(sorted(wanted))], cwd=scratch, env=env,
                                capture_output=True, text=True, timeout=120)
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as error:
        return Check(name, FAIL, f"{python} could not be asked with kr's trainer environment: {error}",
                     "check the trainer environment (`kr vendor status`)")
    changed = {k: answer["env"].get(k) for k, v in wanted.items() if answer["env"].get(k) != v}
    fix = (f"find what changes it at start-up in {python}'s environment (sitecustomize.py, usercustomize.py, *.pth "
           "files, PYTHONSTARTUP) and remove it")
    if changed:
        shown = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return Check(name, FAIL, f"kr sets {', '.join(f'{k}={wanted[k]}' for k in changed)}, but inside the trainer's "
                     f"python {shown}: sd-scripts could reach the network", fix)
    if answer["hub_offline"] is False:
        return Check(name, FAIL, "huggingface_hub in the trainer's python does not run offline although HF_HUB_OFFLINE=1",
                     fix)
    stripped = [k for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY") if os.environ.get(k)]
    note = f"; {', '.join(stripped)} set here, removed from the trainer's environment" if stripped else ""
    hub = "" if answer["hub_offline"] else " (huggingface_hub not installed there)"
    return Check(name, OK, f"the trainer's python runs with HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1, "
                 f"WANDB_MODE=disabled{hub}{note}")


_DEVICE_SAFE = {"NO", "MULTI_GPU"}


def read_accelerate_config(path: Path) -> dict[str, Any]:
    """Top-level keys of accelerate's default config (YAML: simple `key: value` lines; or JSON).

    Raises nothing (an unreadable file gives {}).
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
            return data if isinstance(data, dict) else {}
        except ValueError:
            return {}
    data: dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line[0] in " \t#-":
            continue
        key, sep, value = line.partition(":")
        if sep:
            value = value.split(" #", 1)[0].strip().strip("'\"")
            data[key.strip()] = value
    return data


def check_accelerate_config(paths: list[Path] | None = None) -> Check:
    """Raises nothing."""
    name = "accelerate config"
    found = [p for p in (paths or accelerate_config_paths()) if p.is_file()]
    if not found:
        return Check(name, OK, "no accelerate default config; `accelerate launch` uses kr's flags only")
    path = found[0]
    config = read_accelerate_config(path)
    fix = f"move it away (`mv {path} {path}.bak`) or set HF_HOME to a folder without one; kr passes its own flags"
    risky = []
    if str(config.get("use_cpu", "")).lower() == "true":
        risky.append("use_cpu: true (runs on the CPU)")
    kind = str(config.get("distributed_type", "NO")).upper()
    if kind not in _DEVICE_SAFE:
        risky.append(f"distributed_type: {kind}")
    if str(config.get("num_machines", "1")) not in ("1", ""):
        risky.append(f"num_machines: {config['num_machines']}")
    if risky:
        return Check(name, FAIL, f"{path} sets {', '.join(risky)}, which kr's multi-GPU launches (`accelerate launch`) "
                     "would pick up", fix)
    devices = [f"{k}: {config[k]}" for k in ("gpu_ids", "num_processes", "mixed_precision") if config.get(k) not in (None, "")]
    if devices:
        return Check(name, WARN, f"{path} sets {', '.join(devices)}; kr overrides these with explicit flags, but a manual "
                     "`accelerate launch` would use them", fix)
    return Check(name, OK, f"{path} sets nothing that changes devices")


# ----------------------------------------------------------------------------------------------
# Running all of them.


@dataclass
class Plan:
    """What `kr doctor` was asked about: a preset (resolved with overrides), a base, a dataset."""
    spec: Any = None  # a kohya_runner.spec.Spec, or None without a preset
    preset: str | None = None
    vram: int | None = None
    base: str | None = None
    dataset: str | None = None
    gpu: int = 0


def resolve_plan(home: Path, preset_name: str | None, overrides: list[str], base: str | None,
                 dataset_dir: str | None, gpu: int = 0) -> tuple[Plan, Check | None]:
    """The plan, and a failed "preset" check when the preset does not resolve.

    Raises nothing: a preset (or override) that does not resolve is that failed Check.
    """
    from . import preset as preset_mod

    plan = Plan(base=base, dataset=dataset_dir, gpu=gpu)
    if not preset_name:
        return plan, None
    try:
        resolved = preset_mod.resolve(preset_name, home, list(overrides), {"dataset.dir": dataset_dir, "model.base": base})
    except KrError as error:
        return plan, Check("preset", FAIL, error.message, "`kr presets ls` lists the presets; `kr presets explain NAME`")
    plan.spec, plan.preset = resolved.spec, resolved.preset.name
    plan.base = base or resolved.spec.model.base
    plan.dataset = dataset_dir or resolved.spec.dataset.dir
    plan.vram = next((parse_vram(layer.header.get("vram")) for layer in reversed(resolved.chain) if "vram" in layer.header),
                     None)
    return plan, Check("preset", OK, f"{resolved.preset.label}: {resolved.spec.model.family}, spec {resolved.spec.hash()}")


def run_checks(home: Path, plan: Plan, *, preset_check: Check | None = None, smoke: bool = False,
               gpus: list[Gpu] | None = None, info: TrainerInfo | None = None) -> Report:
    """Every check of plan, in display order (the smoke run is smoke_if_ready's). Raises nothing."""
    import tempfile

    from . import workspace

    spec = plan.spec
    family = spec.model.family if spec is not None else None
    checks = [c for c in (preset_check,) if c is not None]
    tiny = plan_backend(plan) == "tiny"
    if spec is not None:
        check, found = check_memory(home, spec)
        checks.append(check)
        plan.vram = found.total if found is not None and found.device == "gpu" else plan.vram
    if tiny:  # kr's own python on the CPU: no sd-scripts, tokenizer folders, GPU or accelerate involved
        info = TrainerInfo(python=sys.executable)
        checks.append(check_tiny_trainer())
    else:
        gpus = gpu_inventory() if gpus is None else gpus
        info = trainer_info(home) if info is None else info
        checks.append(check_trainer_python(info))
        checks.append(check_torch(info))
        checks += [c for c in (check_cuda(info, gpus),) if c is not None]
        checks.append(check_gpus(gpus, plan.vram, plan.gpu))
        checks.append(check_sd_scripts(home))
        checks.append(check_tokenizers(folder_for(home, spec), family or "sdxl"))
    checks += [c for c in (check_optimizer(spec, info.python if info.python_version or tiny else None,
                                           "tiny" if tiny else "sd-scripts"),) if c is not None]
    if plan.base:
        checks.append(check_base(plan.base, home, family))
    if plan.dataset:
        checks.append(check_dataset(home, _dataset_spec(spec, plan.dataset)))
    needed, what = _planned(home, plan, smoke)
    checks.append(check_disk(workspace.runs_dir(home), needed, what))
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kr-doctor-") as scratch:
        checks.append(check_offline(info.python, Path(scratch)))
    if not tiny:
        checks.append(check_accelerate_config())
    return Report(checks)


def plan_backend(plan: Plan) -> str:
    """tiny when the planned base is kr's tiny model (as `kr run` decides), else sd-scripts. Raises nothing."""
    base = plan.base or (plan.spec.model.base if plan.spec is not None else None)
    return "tiny" if base == "tiny" else "sd-scripts"


def _dataset_spec(spec, folder: str):
    from .spec import build_spec

    if spec is not None:
        return spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"dir": folder})})
    return build_spec({"dataset": {"dir": folder}}, source="kr doctor --dataset")


def _planned(home: Path, plan: Plan, smoke: bool) -> tuple[int, str]:
    needed, parts = 0, []
    if plan.spec is not None:
        images = _count_images(plan.dataset) if plan.dataset else ASSUMED_IMAGES
        try:
            run_bytes, what = planned_bytes(plan.spec, images)
            needed += run_bytes
            parts.append(f"a {plan.preset} run: {what}")
        except KrError:
            pass
    if smoke and not plan.base:
        from . import bases, workspace

        family = _smoke_family(plan, None)
        if not (workspace.bases_dir(home) / bases.default_random_base_name(family, 0)).is_file():
            needed += RANDOM_BASE_BYTES[family]
            parts.append(f"a random {family} base for the smoke run")
    return needed, "; ".join(parts) or "nothing planned"


RANDOM_BASE_BYTES = {"sd15": int(2.0 * GIB), "sdxl": int(6.5 * GIB)}  # fp16 (contract §11)


def _count_images(folder: str | None) -> int:
    from .sdscripts.images import BASE_IMAGE_EXTENSIONS

    try:
        return sum(1 for p in Path(folder).expanduser().iterdir() if p.suffix.lower() in BASE_IMAGE_EXTENSIONS)
    except OSError:
        return ASSUMED_IMAGES


# ----------------------------------------------------------------------------------------------
# The smoke run: 4 real steps at 64 px through kr's run pipeline.


def _smoke_family(plan: Plan, detected: str | None) -> str:
    if detected in ("sd15", "sdxl"):
        return detected
    if plan.spec is not None and plan.spec.model.family in ("sd15", "sdxl"):
        return plan.spec.model.family
    return "sd15"  # the cheaper one: 2 GiB base, ~20 s for 4 steps on 2 CPU cores (contract §11)


def smoke_overrides(family: str, on_cpu: bool, spec=None, bitsandbytes: bool = False) -> list[str]:
    """4 optimizer steps at 64 px, batch 1, no sampling, no intermediate saves. On the CPU, an 8-bit or
    paged optimizer becomes AdamW unless `bitsandbytes` (its CPU build, in the trainer's python) runs it.

    Raises nothing.
    """
    overrides = [
        "name=doctor-smoke", f"dataset.resolution={SMOKE_SIZE}", "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128",
        "dataset.bucket_reso_steps=64", "dataset.repeats=1", "dataset.batch_size=1", "dataset.flip_aug=false",
        f"training.steps={SMOKE_STEPS}", "training.epochs=none", "training.data_loader_workers=0",
        "training.persistent_data_loader_workers=false", "sampling.prompts=[]", "saving.every_n_epochs=none",
        "saving.every_n_steps=none", "saving.last_n_epochs=none", "saving.last_n_steps=none", "saving.state=false",
        "saving.state_on_train_end=false", "network.dim=4", "network.alpha=4.0",
        "scheduler.warmup_steps=0",  # the presets' 100 warmup steps would outlast the 4-step run
    ]
    optimizer = spec.optimizer.type if spec is not None else ""
    if on_cpu:
        # fp16/fp8 need a GPU, the CPU trains in fp32 (contract §11); bitsandbytes' CPU build runs its 8-bit
        # AdamW on the CPU (sd-scripts' AdamW8bit ran so on a CPU-only machine), an older one does not load
        if ("8bit" in optimizer or optimizer.startswith("Paged")) and not bitsandbytes:
            overrides.append("optimizer.type=AdamW")
        overrides += ["precision.mixed_precision=no", "precision.full_bf16=false", "precision.full_fp16=false",
                      "precision.fp8_base=false"]
    return overrides


# The checks whose failure makes a smoke run pointless: it would only fail again, slower and less clearly.
SMOKE_NEEDS = ("preset", "trainer python", "torch", "sd-scripts", "tokenizers", "base model", "dataset")


def smoke_if_ready(home: Path, plan: Plan, report: Report, *, gpus: list[int] | None = None, timeout: float = 1800,
                   progress: Callable[[str], None] | None = None) -> Check:
    """The smoke run, gated by the checks already in report: started only when none of SMOKE_NEEDS failed.

    Its check is appended to report (and its measurements set as report.smoke); returned for display.
    Raises nothing of its own: a failed or skipped smoke run is a failed Check.
    """
    blocking = [check.name for check in report.failed if check.name in SMOKE_NEEDS]
    if blocking:
        check, data = Check("smoke run", FAIL, f"not started: {', '.join(blocking)} failed",
                            "fix those first (see their lines)"), None
    else:
        check, data = smoke(home, plan, gpus=gpus, timeout=timeout, progress=progress)
    report.checks.append(check)
    report.smoke = data
    return check


def smoke(home: Path, plan: Plan, *, gpus: list[int] | None = None, timeout: float = 1800,
          progress: Callable[[str], None] | None = None) -> tuple[Check, dict]:
    """Train SMOKE_STEPS real steps on a random (or the given) base through prepare/launch/Supervisor.

    Raises nothing: a failed smoke run is a failed Check.
    """
    import signal
    import threading
    import time

    from . import bases, preset as preset_mod
    from .run import RunOptions, backend_for, launch, pre_launch, prepare, reconcile
    from .supervisor import Supervisor
    from .trainers.notes import fit

    say = progress or (lambda line: None)
    name = "smoke run"
    try:
        base = plan.base
        if base and base != "tiny":
            info = bases.detect_architecture(Path(base).expanduser())
            family = _smoke_family(plan, info.family)
        else:
            family = _smoke_family(plan, None)
        if not base:
            base = str(_random_base(home, family, say))
        on_cpu = gpus == [] or (gpus is None and not gpu_inventory())
        chosen = plan.preset if plan.spec is not None and plan.spec.model.family == family else f"{family}-lora"
        chosen_spec = plan.spec if chosen == plan.preset else preset_mod.resolve(chosen, home).spec
        images = _smoke_images(home / "doctor" / "smoke-images")  # kept: the run's cache folder links to it
        overrides = smoke_overrides(family, on_cpu, chosen_spec, on_cpu and _has_bitsandbytes(home))
        resolved = preset_mod.resolve(chosen, home, overrides,
                                      {"dataset.dir": str(images), "model.base": base})
        options = RunOptions(preset=chosen, gpus=[] if on_cpu else (gpus or [0]))
        reconcile(home)
        spec, notes = fit(home, resolved.spec, backend_for(resolved.spec, options))
        for line in notes:
            say(line if line.startswith("warning:") else f"note: {line}")
        options = pre_launch(home, spec, options)
        row = prepare(home, spec, options)
        say(f"smoke run {row.run_id}: {SMOKE_STEPS} steps at {SMOKE_SIZE} px, {family}, "
            f"{'CPU' if on_cpu else 'GPU ' + str(options.gpus[0])}, base {base}")
        process = launch(home, row.run_id)
        supervisor = Supervisor(home, row.run_id, process)
        timer = threading.Timer(timeout, supervisor.request_stop)
        timer.daemon = True
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                handlers[signum] = signal.signal(signum, lambda *_: supervisor.request_stop())
        timer.start()
        started = time.monotonic()
        try:
            final = supervisor.run()
        finally:
            timer.cancel()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        wall = time.monotonic() - started
    except KrError as error:
        return Check(name, FAIL, f"could not start: {error.message}", "fix the check above that names this; `kr doctor` "
                     "without --smoke shows them all"), {"error": error.message}
    data = {"run_id": final.run_id, "status": final.status, "family": family, "base": base, "steps": final.steps_done,
            "seconds": round(wall, 1), "it_per_s": final.it_per_s, "peak_rss": final.peak_rss,
            "peak_vram": getattr(final, "peak_vram", None), "device": "cpu" if on_cpu else f"cuda:{options.gpus[0]}",
            "run_dir": final.run_dir}
    if final.status != "succeeded":
        return Check(name, FAIL, f"{final.run_id} {final.status}: {final.hint or final.reason}",
                     f"`kr runs show {final.run_id}`; the trainer's output is in {final.run_dir}/trainer.log"), data
    rate = final.it_per_s
    speed = "–" if not rate else (f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it")
    vram = f", peak VRAM {_gib(data['peak_vram'])}" if data["peak_vram"] else ""
    return Check(name, OK, f"{final.run_id}: {final.steps_done} steps at {SMOKE_SIZE} px in {wall:.1f} s, {speed}, "
                 f"peak memory (PSS) {_gib(final.peak_rss)}{vram} ({data['device']})"), data


def _has_bitsandbytes(home: Path) -> bool:
    from .trainers.packages import missing_modules

    python = trainer_info(home).python
    return bool(python) and missing_modules(python, ["bitsandbytes"]) == []


def _random_base(home: Path, family: str, say: Callable[[str], None]) -> Path:
    from . import base_writer, bases, workspace

    folder = workspace.bases_dir(home)
    path = folder / bases.default_random_base_name(family, 0)
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    say(f"writing a random {family} base (once; {_gib(RANDOM_BASE_BYTES[family])}) to {path} …")
    return base_writer.write_random_base(family, folder, home=home, seed=0, progress=lambda line: say(f"  {line}"))


def _smoke_images(folder: Path) -> Path:
    """4 procedurally drawn 64 px images with captions, made once (the same bytes every time)."""
    from .tiny.styles import write_style_dataset

    try:
        return write_style_dataset(folder, count=4, size=SMOKE_SIZE, seed=0)
    except FileExistsError:  # something else under that name: start it afresh
        shutil.rmtree(folder)
        return write_style_dataset(folder, count=4, size=SMOKE_SIZE, seed=0)
