"""`visionloop init --ci github`: a GitHub Actions workflow for the user's repository.

On every push: train a challenger, compare it with the champion on the frozen test split and
post the report on the commit / pull request with CML. On a push to main (a merge): promote
the challenger when the gate in visionloop.yaml passes. The store and MLflow must be shared
between runs, so their locations come from repository secrets (never written in the file).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConflictError, ValidationError
from .files import atomic_write_text

WORKFLOW_PATH = Path(".github/workflows/visionloop.yml")

_SECRETS_ENV = {
    "VISIONLOOP_STORE_URL": "${{ secrets.VISIONLOOP_STORE_URL }}",
    "MLFLOW_TRACKING_URI": "${{ secrets.MLFLOW_TRACKING_URI }}",
    "AWS_ENDPOINT_URL": "${{ secrets.AWS_ENDPOINT_URL }}",
    "AWS_ACCESS_KEY_ID": "${{ secrets.AWS_ACCESS_KEY_ID }}",
    "AWS_SECRET_ACCESS_KEY": "${{ secrets.AWS_SECRET_ACCESS_KEY }}",
}


def github_workflow(data: str, model: str, python: str = "3.11", install: str = "visionloop[all]") -> dict:
    setup = [
        {"uses": "actions/checkout@v4"},
        {"uses": "actions/setup-python@v5", "with": {"python-version": python}},
        {"name": "Install visionloop", "run": f'pip install "{install}"'},
    ]
    train_steps = setup + [
        {"uses": "iterative/setup-cml@v2"},
        {"name": "Train", "run": 'visionloop train --data "$VL_DATA" --name "$VL_MODEL" --device auto'},
        {"name": "Evaluate and compare with the champion",
         "run": 'visionloop report --model "$VL_MODEL" --out report.md'},
        {"name": "Post the report", "env": {"REPO_TOKEN": "${{ secrets.GITHUB_TOKEN }}"},
         "run": "cml comment create report.md"},
    ]
    promote_steps = setup + [
        {"name": "Promote the challenger when the gate passes",
         "run": 'visionloop models promote "$VL_MODEL@latest"'},
    ]
    return {
        "name": "visionloop",
        "on": {"push": {"branches": ["**"]}},
        "permissions": {"contents": "write", "pull-requests": "write"},
        "env": {"VL_DATA": data, "VL_MODEL": model, **_SECRETS_ENV},
        "jobs": {
            "train": {"runs-on": "ubuntu-latest", "steps": train_steps},
            "promote": {
                "needs": "train",
                "if": "github.event_name == 'push' && github.ref == 'refs/heads/main'",
                "runs-on": "ubuntu-latest",
                "steps": promote_steps,
            },
        },
    }


def write_workflow(root: Path, data: str, model: str, force: bool = False) -> Path:
    if not data or not model:
        raise ValidationError("init needs --data and --model (or train.data and train.name in visionloop.yaml)")
    path = root / WORKFLOW_PATH
    if path.exists() and not force:
        raise ConflictError(f"{path} exists; pass --force to overwrite it")
    text = ("# Written by `visionloop init --ci github`. Secrets: VISIONLOOP_STORE_URL, MLFLOW_TRACKING_URI\n"
            "# (and AWS_* for S3/MinIO) must point at the store and MLflow shared by every run.\n"
            + yaml.safe_dump(github_workflow(data, model), sort_keys=False, width=120))
    atomic_write_text(path, text)
    return path
