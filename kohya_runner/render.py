"""Spec → sd-scripts files: config.toml (--config_file), dataset.toml (--dataset_config) and
sample_prompts.txt, through the jinja2 templates in templates/.

Right by construction, then checked: every training key against the pinned option manifest, the
dataset TOML against sd-scripts' schema, and every file parsed back with `toml` (the parser
sd-scripts uses, with its quirks) and tomllib to exactly the intended values.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import __version__, atomic, runfolder, tokenizers, workspace
from ._toml import loads_strict
from .errors import BadInput, Failed
from .resources import data_dir
from .runfolder import CONFIG_FILE, DATASET_FILE, PROMPTS_FILE, SPEC_FILE
from .sdscripts import options, prompts
from .sdscripts.dataset_config import check_dataset_config, dataset_config
from .sdscripts.training_args import Entry, RenderPaths, TrainingArgs, training_args
from .spec import Problem, Spec, SpecError, training_prompts

RENDERED_FILES = (CONFIG_FILE, DATASET_FILE, PROMPTS_FILE, SPEC_FILE)


@dataclass
class Rendered:
    out_dir: Path
    paths: RenderPaths
    args: TrainingArgs
    command: list[str]
    files: list[Path]

    def command_line(self) -> str:
        return " ".join(shlex.quote(part) for part in self.command)

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "files": [str(f) for f in self.files],
            "command": self.command,
            "output_dir": str(self.paths.output_dir),
        }


# ----------------------------------------------------------------------------------------------
# TOML values that sd-scripts' parser (toml 0.10.2) reads back exactly.
#
# toml 0.10.2 mis-reads some valid TOML: a string whose text starts with two quotes, commas inside
# strings in arrays, and '\u005C' escapes (it unescapes twice). So each string is written in the
# first of a few equivalent spellings that both `toml` and tomllib read back to the same text;
# one that no spelling survives is refused rather than silently changed.

_ESCAPE_ALWAYS = {0x7F, 0x85, 0x2028, 0x2029, 0xFEFF}


def _basic(text: str, escape: str = "") -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch in escape or code < 0x20 or 0x80 <= code <= 0x9F or code in _ESCAPE_ALWAYS:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _literal(text: str) -> str | None:
    if "'" in text or any(ord(ch) < 0x20 or ord(ch) in _ESCAPE_ALWAYS for ch in text):
        return None
    return "'" + text + "'"


_SPELLINGS = (
    lambda s: _basic(s),
    _literal,
    lambda s: _basic(s, escape=",[]#{}='"),
)


class Unrepresentable(ValueError):
    pass


def _reads_back(line: str, expected: Any) -> bool:
    import toml

    try:
        return toml.loads(line) == {"v": expected} and loads_strict(line) == {"v": expected}
    except Exception:
        return False


@lru_cache(maxsize=4096)
def _string(text: str) -> str:
    for spell in _SPELLINGS:
        encoded = spell(text)
        if encoded is not None and _reads_back(f"v = {encoded}\n", text):
            return encoded
    raise Unrepresentable(text)


def _string_array(items: tuple[str, ...]) -> str:
    for spell in _SPELLINGS:
        encoded = [spell(item) for item in items]
        if None not in encoded:
            line = "[" + ", ".join(encoded) + "]"  # type: ignore[arg-type]
            if _reads_back(f"v = {line}\n", list(items)):
                return line
    raise Unrepresentable(repr(list(items)))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unrepresentable(repr(value))
        text = repr(value)
        # A decimal point or exponent keeps it a float for every reader (§2.1).
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value) and value:
            return _string_array(tuple(value))
        kinds = {type(v) for v in value}
        if len(kinds) > 1:
            raise Unrepresentable(f"mixed-type array {value!r}")  # toml 0.10.2 rejects them
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise Unrepresentable(f"{type(value).__name__} value {value!r}")


# ----------------------------------------------------------------------------------------------
# Inputs and paths.


def resolve_base(spec: Spec, home: Path) -> str:
    base = spec.model.base
    if base is None:
        raise BadInput("no base model given. Fix: pass --base /path/to/model.safetensors "
                       "(or model.base=… ; `--base tiny` uses kr's built-in tiny model)", field="model.base")
    if base == "tiny":
        tiny = workspace.tiny_base_dir(home, spec.model.family)
        if not (tiny / "model_index.json").is_file():
            raise BadInput(f"the built-in tiny {spec.model.family} base is not built yet ({tiny}). "
                           "Fix: run `kr base tiny` (or `kr demo`, which builds it)", field="model.base")
        return str(tiny)
    path = Path(base).expanduser()
    if not path.exists():
        if options.looks_like_hub_id(base):
            raise BadInput(f"model.base {base!r} looks like a Hugging Face Hub id; kr never downloads. "
                           "Fix: pass the path of a local .safetensors file or Diffusers folder", field="model.base")
        raise BadInput(f"base model not found: {path}. Fix: pass --base with the path of an existing "
                       ".safetensors/.ckpt file or a Diffusers folder", field="model.base")
    if path.is_dir() and not (path / "model_index.json").is_file():
        raise BadInput(f"base model folder {path} has no model_index.json, so it is not a Diffusers model. "
                       "Fix: pass the .safetensors file itself, or the Diffusers folder", field="model.base")
    # Real path: SDXL resolves a symlink with one readlink, relative to the CWD (§6.1).
    return str(path.resolve())


def resolve_dataset_dir(spec: Spec) -> Path:
    if spec.dataset.dir is None:
        raise BadInput("no dataset folder given. Fix: pass --dataset /path/to/images (or dataset.dir=…)",
                       field="dataset.dir")
    path = Path(spec.dataset.dir).expanduser()
    if not path.exists():
        raise BadInput(f"dataset folder not found: {path}. Fix: pass --dataset with the folder that holds "
                       "the images and their caption files", field="dataset.dir")
    if not path.is_dir():
        raise BadInput(f"dataset path is not a folder: {path}. Fix: pass the folder that holds the images, "
                       "not a single file", field="dataset.dir")
    return path.resolve()


def _optional_file(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.exists():
        if options.looks_like_hub_id(value):
            raise BadInput(f"{field} {value!r} looks like a Hub id; kr never downloads. Fix: give a local path",
                           field=field)
        raise BadInput(f"{field} not found: {path}. Fix: give the path of an existing file", field=field)
    return str(path.resolve())


def render_paths(spec: Spec, out_dir: Path, home: Path, *, image_dir: Path | None = None,
                 run_id: str | None = None, log_prefix: str | None = None) -> RenderPaths:
    out_dir = out_dir.resolve()
    return RenderPaths(
        config_file=out_dir / CONFIG_FILE,
        dataset_config=out_dir / DATASET_FILE,
        sample_prompts=out_dir / PROMPTS_FILE,
        output_dir=runfolder.of(out_dir).output,
        logging_dir=runfolder.of(out_dir).logs,
        tokenizer_cache_dir=tokenizers.folder_for(home, spec),
        image_dir=image_dir or resolve_dataset_dir(spec),
        base=resolve_base(spec, home),
        vae=_optional_file(spec.model.vae, "model.vae"),
        network_weights=_optional_file(spec.network.weights, "network.weights"),
        log_prefix=log_prefix or f"{run_id or 'kr'}_",
        run_id=run_id,
    )


def placeholder_paths(spec: Spec, home: Path) -> RenderPaths:
    """Paths for checking a spec without a dataset, a base or a run folder: the spec's own values where it
    has them, else placeholders under a folder nothing ever writes to. Raises nothing."""
    where = Path("/nonexistent/kr-validate")
    folder = runfolder.of(where)
    return RenderPaths(
        config_file=where / CONFIG_FILE, dataset_config=where / DATASET_FILE, sample_prompts=where / PROMPTS_FILE,
        output_dir=folder.output, logging_dir=folder.logs, tokenizer_cache_dir=tokenizers.folder_for(home, spec),
        image_dir=Path(spec.dataset.dir or where / "images"),
        base=spec.model.base if spec.model.base not in (None, "tiny") else str(where / "base.safetensors"),
        vae=spec.model.vae, network_weights=spec.network.weights, log_prefix=f"{spec.output_name}_", run_id="check")


def check_spec(spec: Spec, home: Path) -> None:
    """Every check `kr render` makes on the spec's own values, with nothing written and no dataset or base
    needed (they are not looked at): option names and values against the pinned manifest, refused options
    (off-machine logging, kr's own), the dataset TOML schema, TOML read-back and the prompt lines.
    Raises SpecError / BadInput as render does."""
    render_texts(spec, placeholder_paths(spec, home))


# ----------------------------------------------------------------------------------------------
# Checks against the pinned manifest.


def check_args(spec: Spec, args: TrainingArgs) -> None:
    script = options.script_for(spec.model.family)
    problems = []
    spec_keys = args.owned
    for entry in args.entries:
        if entry.source.startswith("sd_scripts."):
            problem = _raw_option_problem(entry, spec_keys)
            if problem:
                problems.append(problem)
                continue
        reason = options.check_option(script, entry.key, entry.value)
        if reason:
            problems.append(Problem(entry.source, entry.value, f"sd-scripts option {entry.key} {reason}"))
    if problems:
        raise SpecError(problems, "the rendered training options")


def _raw_option_problem(entry: Entry, spec_keys: dict[str, str]) -> Problem | None:
    reason = options.refusal(entry.key, entry.value)
    if reason:
        return Problem(entry.source, entry.value, f"is refused: {reason}", "remove it")
    if entry.key in spec_keys and spec_keys[entry.key] != "kr":
        return Problem(entry.source, entry.value, f"{entry.key} is a spec field",
                       f"set {spec_keys[entry.key]} instead")
    if entry.key in options.MANAGED_BY_KR or entry.key in spec_keys:
        return Problem(entry.source, entry.value, "kr sets this option itself", "remove it")
    if entry.key not in options.manifest("sdxl_train_network") and not entry.key.startswith("metadata_"):
        import difflib

        close = difflib.get_close_matches(entry.key, list(options.manifest("sdxl_train_network")), n=1)
        fix = f"did you mean sd_scripts.{close[0]}?" if close else "see vendor/sd-scripts-args.json for every option"
        return Problem(entry.source, entry.value,
                       f"is not an sd-scripts option at {options.pinned_commit()[:7]} (sd-scripts would ignore it silently)", fix)
    return None


# ----------------------------------------------------------------------------------------------
# Writing.


@lru_cache(maxsize=1)
def _templates():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["toml"] = toml_value
    return env


def _render_template(name: str, **context: Any) -> str:
    return _templates().get_template(name).render(kr_version=__version__, commit=options.pinned_commit()[:7], **context)


def render_texts(spec: Spec, paths: RenderPaths) -> tuple[TrainingArgs, dict[str, str]]:
    """The file contents, checked; nothing is written."""
    args = training_args(spec, paths)
    check_args(spec, args)
    dataset_doc = dataset_config(spec, paths)
    samples = training_prompts(spec)
    prompt_lines = prompts.sample_prompt_lines(spec, samples)
    try:
        texts = {
            CONFIG_FILE: _render_template("config.toml.j2", script=options.script_for(spec.model.family),
                                          sections=args.sections()),
            DATASET_FILE: _render_template("dataset.toml.j2", doc=dataset_doc),
            PROMPTS_FILE: _render_template("sample_prompts.txt.j2", lines=prompt_lines),
            SPEC_FILE: json.dumps(spec.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n",
        }
    except Unrepresentable as e:
        raise BadInput(f"a value cannot be written so that sd-scripts' TOML reader (toml 0.10.2) reads it back "
                       f"unchanged: {e}. Fix: change that text (e.g. do not start it with two quote characters)") from None
    verify_texts(texts, args.as_dict(), dataset_doc, prompt_lines)
    verify_prompts(spec, samples, texts[PROMPTS_FILE])
    return args, texts


def verify_texts(texts: dict[str, str], expected_args: dict[str, Any], dataset_doc: dict[str, Any],
                 prompt_lines: list[str]) -> None:
    """Parse the files back the way sd-scripts will, and with tomllib; both must give exactly the intent."""
    import toml

    flat: dict[str, Any] = {}
    for table in toml.loads(texts[CONFIG_FILE]).values():
        flat.update(table)  # sd-scripts flattens sections one level (§2.1)
    strict_flat: dict[str, Any] = {}
    for table in loads_strict(texts[CONFIG_FILE]).values():
        strict_flat.update(table)
    if flat != expected_args or strict_flat != expected_args:
        raise Failed("internal error: config.toml does not parse back to the intended options; please report it")
    if toml.loads(texts[DATASET_FILE]) != dataset_doc or loads_strict(texts[DATASET_FILE]) != dataset_doc:
        raise Failed("internal error: dataset.toml does not parse back to the intended dataset; please report it")
    schema_problems = check_dataset_config(dataset_doc)
    if schema_problems:
        raise Failed("internal error: dataset.toml breaks sd-scripts' schema: " + "; ".join(schema_problems))
    if [l.strip() for l in prompt_lines] != prompts.read_prompt_file(texts[PROMPTS_FILE]):
        raise Failed("internal error: sample_prompts.txt does not read back line for line; please report it")


def verify_prompts(spec: Spec, samples: list, text: str) -> None:
    """Read sample_prompts.txt the way sd-scripts does, every ' --' piece from the FIRST one (the prompt) on,
    and demand exactly the intended prompt and options. Raises SpecError (exit 2) naming the field that
    starts a prompt sd-scripts would read differently (the spec rules refuse the known cases earlier)."""
    from .spec.prompts import start_field

    problems = []
    for sample, line in zip(samples, prompts.read_prompt_file(text), strict=True):
        read, wanted = prompts.parse_prompt_line(line), prompts.intended_prompt_dict(spec, sample)
        if read != wanted:
            differs = sorted(k for k in read.keys() | wanted.keys() if read.get(k) != wanted.get(k))
            field = "sampling.negative_prompt" if differs == ["negative_prompt"] and spec.sampling.negative_prompt \
                else start_field(spec, sample)
            seen = ", ".join(f"{k}={read.get(k)!r}" for k in differs)
            flags = ", ".join(option.flag for option in prompts.PROMPT_OPTIONS)
            problems.append(Problem(field, sample.text, f"sd-scripts would read this {sample.kind} sample prompt's "
                                    f"line with different {', '.join(differs)} ({seen})",
                                    f"reword the start so it is not one of {flags} followed by a space"))
    if problems:
        raise SpecError(problems, "the sample prompts")


def write_files(out_dir: Path, texts: dict[str, str], *, force: bool = False) -> list[Path]:
    """Each file written atomically; existing kr files are never replaced unless force."""
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = [name for name in texts if (out_dir / name).exists()]
    if existing and not force:
        raise BadInput(f"{out_dir} already holds {', '.join(existing)}; kr does not overwrite. "
                       "Fix: choose another -o folder, or pass --force to replace them")
    written = []
    for name, text in texts.items():
        written.append(atomic.write_text(out_dir / name, text))
    return written


def render(spec: Spec, out_dir: Path, home: Path, *, force: bool = False, image_dir: Path | None = None,
           run_id: str | None = None, log_prefix: str | None = None) -> Rendered:
    from .trainers import sdscripts

    paths = render_paths(spec, out_dir, home, image_dir=image_dir, run_id=run_id, log_prefix=log_prefix)
    args, texts = render_texts(spec, paths)
    files = write_files(out_dir.resolve(), texts, force=force)
    try:
        checkout, python = sdscripts.locate(home)
    except BadInput:  # a bad KR_SD_SCRIPTS / KR_SD_PYTHON: the files are fine, the command shows placeholders
        checkout, python = None, None
    command = sdscripts.single_gpu_command(spec.model.family, paths.config_file, checkout, python)
    return Rendered(out_dir.resolve(), paths, args, command, files)
