"""`visionloop init --ci github`: a GitHub Actions workflow for the user's repository.

On every push: train a challenger, compare it with the champion on the frozen test split and
post the report on the commit with CML (the report shows the task's metrics: mAP for detection,
top-1/top-5 and per-class accuracy for classification; the workflow itself is the same for both). On a push to main (a merge): promote THE VERSION THIS
COMMIT'S TRAIN JOB REGISTERED (a job output), never ``@latest``, which another push may have
moved meanwhile. visionloop is installed from the repository being built, so the workflow runs
the code under review. Permissions are the least each job needs. The store and MLflow must be
shared between runs, so their locations come from repository secrets (never written in the file).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConflictError, ValidationError
from .files import atomic_write_text

WORKFLOW_PATH = Path(".github/workflows/visionloop.yml")
INSTALL = 'pip install ".[all]"'  # the checked-out repository itself, not a release from PyPI

_SECRETS_ENV = {
    "VISIONLOOP_STORE_URL": "${{ secrets.VISIONLOOP_STORE_URL }}",
    "MLFLOW_TRACKING_URI": "${{ secrets.MLFLOW_TRACKING_URI }}",
    "AWS_ENDPOINT_URL": "${{ secrets.AWS_ENDPOINT_URL }}",
    "AWS_ACCESS_KEY_ID": "${{ secrets.AWS_ACCESS_KEY_ID }}",
    "AWS_SECRET_ACCESS_KEY": "${{ secrets.AWS_SECRET_ACCESS_KEY }}",
}
# The version that `train` registered (or found already registered: same data, params, code),
# written as a step output; `python -c` keeps it free of any parsing of human-readable output.
_VERSION_STEP = ('python -c "import os; from visionloop.ci import trained_version; '
                 "print('version=' + trained_version(os.environ['VL_DATA'], os.environ['VL_MODEL']))\""
                 ' >> "$GITHUB_OUTPUT"')
TRAINED = "${{ steps.trained.outputs.version }}"


def _setup(python: str) -> list[dict]:
    return [
        {"uses": "actions/checkout@v4"},
        {"uses": "actions/setup-python@v5", "with": {"python-version": python}},
        {"name": "Install visionloop from this repository", "run": INSTALL},
    ]


def github_workflow(data: str, model: str, python: str = "3.11") -> dict:
    train_steps = _setup(python) + [
        {"uses": "iterative/setup-cml@v2"},
        {"name": "Train", "run": 'visionloop train --data "$VL_DATA" --name "$VL_MODEL" --device auto'},
        {"name": "The version this commit registered", "id": "trained", "run": _VERSION_STEP},
        {"name": "Evaluate and compare with the champion",
         "run": f'visionloop report --new "$VL_MODEL/{TRAINED}" --out report.md'},
        {"name": "Post the report", "env": {"REPO_TOKEN": "${{ secrets.GITHUB_TOKEN }}"},
         "run": "cml comment create report.md"},
    ]
    promote_steps = _setup(python) + [
        {"name": "Promote this commit's version when the gate passes",
         "run": 'visionloop models promote "$VL_MODEL/${{ needs.train.outputs.version }}"'},
    ]
    return {
        "name": "visionloop",
        "on": {"push": {"branches": ["**"]}},
        "permissions": {"contents": "read"},  # the default for every job; train adds what CML needs
        "env": {"VL_DATA": data, "VL_MODEL": model, **_SECRETS_ENV},
        "jobs": {
            "train": {
                "runs-on": "ubuntu-latest",
                # CML posts the report as a commit comment (contents) or on the pull request
                "permissions": {"contents": "write", "pull-requests": "write"},
                "outputs": {"version": TRAINED},
                "steps": train_steps,
            },
            "promote": {
                "needs": "train",
                "if": "github.event_name == 'push' && github.ref == 'refs/heads/main'",
                "runs-on": "ubuntu-latest",
                "permissions": {"contents": "read"},
                "steps": promote_steps,
            },
        },
    }


class _NoAliases(yaml.SafeDumper):
    """Repeated objects (the setup steps of both jobs) written out again, never as &id001 / *id001:
    GitHub's parser accepts anchors, but people reading and editing the file should not need to."""

    def ignore_aliases(self, data) -> bool:
        return True


def dump_workflow(wf: dict) -> str:
    return yaml.dump(wf, Dumper=_NoAliases, sort_keys=False, width=200)


def trained_version(data: str, model: str, config: Path | None = None) -> str:
    """The version of ``model`` that holds the training ``visionloop train --data DATA --name MODEL
    --device auto`` just ran (by its cache key: the same data, parameters and code)."""
    from .errors import NotFoundError
    from .training.config import load_config
    from .training.pipeline import registered_version

    mv = registered_version(load_config(config, data=data, name=model, device="auto"))
    if mv is None:
        raise NotFoundError(f"no version of {model} holds this training of {data}; did `visionloop train` run?")
    return mv.version


def write_workflow(root: Path, data: str, model: str, force: bool = False) -> Path:
    if not data or not model:
        raise ValidationError("init needs --data and --model (or train.data and train.name in visionloop.yaml)")
    path = root / WORKFLOW_PATH
    if path.exists() and not force:
        raise ConflictError(f"{path} exists; pass --force to overwrite it")
    text = ("# Written by `visionloop init --ci github`. Secrets: VISIONLOOP_STORE_URL, MLFLOW_TRACKING_URI\n"
            "# (and AWS_* for S3/MinIO) must point at the store and MLflow shared by every run.\n"
            + dump_workflow(github_workflow(data, model)))
    atomic_write_text(path, text)
    return path
