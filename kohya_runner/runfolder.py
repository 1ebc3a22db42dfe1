"""The run folder's layout: the one place that names the files and folders inside `runs/<id>/`.

    runs/<id>/
      config.toml  dataset.toml  sample_prompts.txt  spec.json     rendered before launch (render)
      run.json                                                     the ledger row's copy (ledger.rebuild reads it)
      command.json  environment.json                               how the trainer is started
      trainer.log                                                  the trainer's console (monitor follows it)
      supervisor.log                                               a detached supervisor's own output
      output/          the trainer's LoRAs, state folders, output/sample/ images
      logs/            the trainer's TensorBoard event files
      archive/         manifest.json, loss.csv, loss.png, the config snapshot (archive)
      report/          `kr report`'s sheet (report)
      posthoc/<job>/   post-hoc sample jobs: job.json, prompts, generator logs, images (sample)
      scores.json      per-checkpoint scores (score)
      ratings.json     reviewers' ratings of checkpoints and samples (review)

Beside workspace.py, which lays out the workspace around the run folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPEC_FILE = "spec.json"
RUN_FILE = "run.json"  # the run's ledger row, mirrored: the ledger can be rebuilt from the run folders
CONFIG_FILE = "config.toml"
DATASET_FILE = "dataset.toml"
PROMPTS_FILE = "sample_prompts.txt"
COMMAND_FILE = "command.json"
ENVIRONMENT_FILE = "environment.json"
LOG_FILE = "trainer.log"
SUPERVISOR_LOG = "supervisor.log"
OUTPUT_DIR = "output"
SAMPLES_DIR = "sample"  # inside output/
LOGS_DIR = "logs"
ARCHIVE_DIR = "archive"
MANIFEST_FILE = "manifest.json"  # inside archive/
LOSS_CSV = "loss.csv"  # inside archive/
LOSS_PNG = "loss.png"  # inside archive/
REPORT_DIR = "report"
POSTHOC_DIR = "posthoc"
JOB_FILE = "job.json"  # inside posthoc/<job>/
SCORES_FILE = "scores.json"
RATINGS_FILE = "ratings.json"


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder; nothing is created or read here."""
    root: Path

    @property
    def spec(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def record(self) -> Path:
        return self.root / RUN_FILE

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def command(self) -> Path:
        return self.root / COMMAND_FILE

    @property
    def environment(self) -> Path:
        return self.root / ENVIRONMENT_FILE

    @property
    def log(self) -> Path:
        return self.root / LOG_FILE

    @property
    def supervisor_log(self) -> Path:
        return self.root / SUPERVISOR_LOG

    @property
    def output(self) -> Path:
        return self.root / OUTPUT_DIR

    @property
    def samples(self) -> Path:
        return self.output / SAMPLES_DIR

    @property
    def logs(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def archive(self) -> Path:
        return self.root / ARCHIVE_DIR

    @property
    def manifest(self) -> Path:
        return self.archive / MANIFEST_FILE

    @property
    def loss_csv(self) -> Path:
        return self.archive / LOSS_CSV

    @property
    def loss_png(self) -> Path:
        return self.archive / LOSS_PNG

    @property
    def report(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def posthoc(self) -> Path:
        return self.root / POSTHOC_DIR

    @property
    def scores(self) -> Path:
        return self.root / SCORES_FILE

    @property
    def ratings(self) -> Path:
        return self.root / RATINGS_FILE


def of(run_dir: str | Path) -> RunFolder:
    """The layout of the run folder at `run_dir` (a RunRow's run_dir is a str)."""
    return RunFolder(Path(run_dir))
