"""TrainConfig: file + flags, validation as one clear line."""

from __future__ import annotations

import pytest

from visionloop.errors import NotFoundError, ValidationError
from visionloop.training.config import CPU_AUTO_BATCH, auto_threads, build_config, load_config, load_file
from visionloop.training.trainer import check_model_source


def test_flags_override_file(tmp_path):
    cfg_file = tmp_path / "visionloop.yaml"
    cfg_file.write_text("train:\n  epochs: 7\n  imgsz: 320\n  max-width: 640\n  model: yolo11s.yaml\n")
    cfg = load_config(cfg_file, epochs=3, imgsz=None, data="shapes@1")
    assert cfg.epochs == 3  # flag wins
    assert cfg.imgsz == 320  # from the file
    assert cfg.max_width == 640  # dashes in keys accepted
    assert cfg.model == "yolo11s.yaml"
    assert cfg.data == "shapes@1"


def test_default_file_is_optional(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_file(None) == {}
    with pytest.raises(NotFoundError, match="not found"):
        load_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "--epochs: must be at least 1"),
        ({"imgsz": 100}, "--imgsz: must be a positive multiple of 32"),
        ({"batch": 0}, "--batch: must be -1"),
        ({"batch": -2}, "--batch: must be -1"),
        ({"device": "gpu"}, "--device: must be cpu, auto"),
        ({"name": "bad name!"}, "--name: must start with a letter"),
        ({"model": "weights.bin"}, "must be an architecture .yaml"),
        ({"workers": -1}, "--workers: must not be negative"),
        ({"engine": "spark"}, "--engine"),
    ],
)
def test_bad_values_are_one_line(overrides, message):
    with pytest.raises(ValidationError) as info:
        build_config({}, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "visionloop.yaml"
    f.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ValidationError, match="unknown training parameter 'epochz'"):
        load_config(f)


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "visionloop.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(ValidationError, match="not valid YAML"):
        load_config(f)


def test_auto_batch_on_cpu_is_safe_size():
    cfg = build_config({}, {"batch": -1, "device": "cpu"})
    assert cfg.resolved_device() == "cpu"
    assert cfg.resolved_batch("cpu") == CPU_AUTO_BATCH
    assert cfg.resolved_batch("0") == -1  # ultralytics AutoBatch on a GPU
    assert build_config({}, {"batch": 8}).resolved_batch("cpu") == 8


def test_training_params_exclude_presentation():
    a = build_config({}, {"name": "a", "verbose": True, "force": True})
    b = build_config({}, {"name": "b"})
    assert a.training_params() == b.training_params()
    assert build_config({}, {"epochs": 2}).training_params() != b.training_params()


def test_model_source_checks(tmp_path):
    check_model_source("yolo11n.yaml")  # bundled with ultralytics (scaled name)
    with pytest.raises(NotFoundError) as info:
        check_model_source(str(tmp_path / "yolo11n.pt"))
    msg = str(info.value)
    assert "not found" in msg and "yolo11n.yaml" in msg and "cannot be downloaded" in msg
    with pytest.raises(NotFoundError, match="architecture"):
        check_model_source("no-such-net.yaml")
    own = tmp_path / "net.yaml"
    own.write_text("nc: 1\n")
    check_model_source(str(own))


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [(2, 0.2, 2), (2, 1.0, 2), (2, 1.7, 1), (2, 6.0, 1), (16, 1.0, 16), (16, 5.0, 12), (1, 0.0, 1)],
)
def test_auto_threads_uses_idle_cores(cores, load, expected):
    assert auto_threads(cores, load) == expected


def test_explicit_threads_win():
    assert build_config({}, {"threads": 3}).resolved_threads() == 3
    assert build_config({}, {}).resolved_threads() >= 1
