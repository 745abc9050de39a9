"""``geneval@official``: hand the generated folders to the official GenEval scorer in the user's environment.

The official scorer (djghosh13/geneval ``evaluation/evaluate_images.py``: mmdetection 2.x Mask2Former,
open_clip, clip_benchmark, a CUDA device) needs pinned packages that do not belong in this environment,
so it runs as a subprocess of a Python the user provides::

    PYTHON REPO/evaluation/evaluate_images.py IMAGEDIR --outfile OUT.jsonl --model-path DETECTOR_DIR

IMAGEDIR is a scratch folder of links to the items still to score (so a resumed run scores only those);
the rows of OUT.jsonl are mapped back to items through their file names. The results file and the
scorer's log are kept under ``<bench_dir>/official/`` for inspection.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.runtime.records import canonical_hash
from unilip.weights import file_sha256

from .aggregate import read_results_jsonl
from .weights import ScorerWeightsMissing

logger = logging.getLogger(__name__)

OFFICIAL_SCRIPT = Path("evaluation") / "evaluate_images.py"
OFFICIAL_CHECKPOINT = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"
OFFICIAL_SOURCE = (
    "the official scorer needs a checkout of https://github.com/djghosh13/geneval, a Python "
    "environment with its pinned packages (torch 1.12.1, mmcv-full 1.7.1, mmdet 2.x, "
    "open-clip-torch 2.20.0, clip-benchmark 1.4.0) and the OpenMMLab checkpoint "
    f"{OFFICIAL_CHECKPOINT} (its evaluation/download_models.sh fetches it)"
)


class OfficialScorerError(RuntimeError):
    """The official scorer did not run to the end; the message holds the tail of its log."""


def _scorer_environment() -> dict[str, str]:
    """The scorer's environment: ours, with one GPU per process when sharded under torchrun.

    The official script always uses the default CUDA device; under torchrun each process hands its own
    scorer the GPU of its ``LOCAL_RANK`` (among ``CUDA_VISIBLE_DEVICES`` when that is set).
    """
    env = dict(os.environ)
    local_rank = env.get("LOCAL_RANK")
    if local_rank is not None and int(env.get("LOCAL_WORLD_SIZE", "1")) > 1:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[int(local_rank) % len(visible)] if visible else local_rank
    return env


@dataclass(frozen=True)
class OfficialScorer:
    """The official scorer as a subprocess.

    Attributes:
        python: the interpreter of the user's GenEval environment.
        repo: the user's GenEval checkout (holding ``evaluation/evaluate_images.py``).
        model_path: the folder holding the mmdet checkpoint (the scorer's ``--model-path``).
    """

    python: Path
    repo: Path
    model_path: Path

    @classmethod
    def from_options(cls, python: str | None, repo: str | None, model_path: str | None) -> OfficialScorer:
        """Check the three paths, with errors that say what each must be."""

        def need(value: str | None, option: str, what: str, is_file: bool) -> Path:
            hint = f"--opt {option}=PATH: {what}; {OFFICIAL_SOURCE}"
            if not value:
                raise ScorerWeightsMissing(f"geneval@official: no '{option}' given ({hint})")
            path = Path(value).expanduser()
            if not (path.is_file() if is_file else path.is_dir()):
                raise ScorerWeightsMissing(f"geneval@official: {path} does not exist ({hint})")
            return path

        python_path = need(python, "official_scorer", "the Python of your GenEval environment", True)
        repo_path = need(repo, "official_repo", "your GenEval checkout", False)
        if not (repo_path / OFFICIAL_SCRIPT).is_file():
            raise ScorerWeightsMissing(
                f"geneval@official: {repo_path} has no {OFFICIAL_SCRIPT}; "
                f"--opt official_repo must be a GenEval checkout"
            )
        model_dir = need(model_path, "detector", f"the folder holding {OFFICIAL_CHECKPOINT}", False)
        if not (model_dir / OFFICIAL_CHECKPOINT).is_file():
            raise ScorerWeightsMissing(
                f"geneval@official: {model_dir} holds no {OFFICIAL_CHECKPOINT}; {OFFICIAL_SOURCE}"
            )
        return cls(python=python_path, repo=repo_path, model_path=model_dir)

    def fingerprint(self) -> dict[str, Any]:
        """Digests of the scorer script and the detector checkpoint (the environment is the user's)."""
        return {
            "script_sha256": file_sha256(self.repo / OFFICIAL_SCRIPT),
            "checkpoint": OFFICIAL_CHECKPOINT,
            "checkpoint_sha256": file_sha256(self.model_path / OFFICIAL_CHECKPOINT),
        }

    def command(self, image_dir: Path, outfile: Path) -> list[str]:
        """The scorer's command line (its documented CLI)."""
        return [
            str(self.python),
            str((self.repo / OFFICIAL_SCRIPT).resolve()),
            str(image_dir),
            "--outfile",
            str(outfile),
            "--model-path",
            str(self.model_path.resolve()),
        ]

    def score(self, image_root: Path, folders: Sequence[str], work_dir: Path) -> dict[str, list[dict[str, Any]]]:
        """Score the given prompt folders of ``image_root``; rows of the official results, by folder name.

        Raises:
            OfficialScorerError: when the subprocess fails or writes no results file.
        """
        work_dir.mkdir(parents=True, exist_ok=True)
        stem = f"results-{canonical_hash(sorted(folders), length=12)}"
        outfile, log_path = work_dir / f"{stem}.jsonl", work_dir / f"{stem}.log"
        outfile.unlink(missing_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="scoring-", dir=work_dir))
        try:
            for folder in folders:  # links: the scorer reads only folders whose names are all digits
                os.symlink((image_root / folder).resolve(), scratch / folder, target_is_directory=True)
            command = self.command(scratch, outfile)
            logger.info(
                "geneval@official: running the official scorer on %d prompts: %s", len(folders), " ".join(command)
            )
            with log_path.open("w") as log:
                completed = subprocess.run(
                    command, cwd=self.repo, stdout=log, stderr=subprocess.STDOUT, env=_scorer_environment()
                )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        tail = log_path.read_text(errors="replace")[-2000:]
        if completed.returncode != 0:
            raise OfficialScorerError(
                f"the official scorer exited with status {completed.returncode}; log {log_path}:\n{tail}"
            )
        if not outfile.is_file():
            raise OfficialScorerError(f"the official scorer wrote no {outfile}; log {log_path}:\n{tail}")
        rows_by_folder: dict[str, list[dict[str, Any]]] = {folder: [] for folder in folders}
        for row in read_results_jsonl(outfile):
            parts = Path(str(row.get("filename", ""))).parts
            if len(parts) < 3 or parts[-3] not in rows_by_folder or parts[-2] != "samples":
                raise OfficialScorerError(f"{outfile}: a row names an unexpected file {row.get('filename')!r}")
            rows_by_folder[parts[-3]].append({**row, "filename": "/".join(parts[-3:])})
        return rows_by_folder
