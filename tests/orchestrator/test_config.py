"""Unit tests of config validation: every problem reported at once, with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.config import ExperimentConfig, apply_overrides, load_config, parse_config
from orchestrator.errors import UserError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    config, resolved = load_config(path)
    assert isinstance(config, ExperimentConfig)
    assert parse_config(resolved) == config  # the resolved dump validates to the same config


def test_three_mistakes_give_three_lines():
    raw = {"seed": -1, "searcher": {"name": "random", "num_samples": -3}, "data": {"dataset": "imagenet"}}
    with pytest.raises(UserError) as info:
        parse_config(raw)
    lines = info.value.problems
    assert len(lines) == 3
    assert any(ln.startswith("config: seed:") and "-1" in ln for ln in lines)
    assert any("searcher.num_samples" in ln and "-3" in ln for ln in lines)
    assert any("data.dataset" in ln and "valid datasets: " in ln and "digits" in ln for ln in lines)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"spaec": {}}, "spaec: unknown key; valid keys: name, seed"),
        ({"data": {"pth": "x"}}, "data.pth: unknown key; valid keys: dataset, path"),
        ({"searcher": {"name": "random", "bogus": 1}}, "searcher.bogus: unknown key; valid keys: name, num_samples"),
        ({"searcher": {"name": "evolution"}}, "searcher.name: unknown searcher 'evolution'; valid searchers: random"),
        ({"searcher": {"num_samples": 4}}, "searcher.name: required"),
        ({"space": {"d_min": 9, "d_max": 3}}, "space: 1 <= d_min <= d_max must hold, but got d_min=9, d_max=3"),
        ({"data": {"val_fraction": 0.6, "test_fraction": 0.5}}, "val_fraction + test_fraction < 1"),
        ({"training": {"lr": 0}}, "training.lr: input should be greater than 0, got 0"),
        ({"searcher": {"name": "random", "epochs": "many"}}, "searcher.epochs: input should be a valid integer"),
        ({"name": "bad name!"}, "name: string should match pattern"),
        ({"space": {"ops": ["sep", "pool"]}}, "space.ops.1"),
    ],
)
def test_each_mistake_names_its_key(raw, expected):
    with pytest.raises(UserError) as info:
        parse_config(raw)
    assert any(expected in line for line in info.value.problems), info.value.problems


def test_not_a_mapping():
    with pytest.raises(UserError, match="expected a YAML mapping"):
        parse_config(["seed", 1])


def test_overrides_set_nested_values_as_yaml():
    raw = apply_overrides({"searcher": {"name": "random"}}, ["searcher.num_samples=20", "training.use_gpu=true", "seed=3"])
    assert raw == {"searcher": {"name": "random", "num_samples": 20}, "training": {"use_gpu": True}, "seed": 3}
    with pytest.raises(UserError, match="expected key.path=value"):
        apply_overrides({}, ["searcher.num_samples"])
    with pytest.raises(UserError, match="is not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_load_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"searcher": {"name": "random", "num_samples": 2}}))
    config, _ = load_config(ok, ["searcher.epochs=1"])
    assert config.searcher.num_samples == 2 and config.searcher.epochs == 1


def test_searcher_space_and_data_must_fit_together():
    with pytest.raises(UserError) as info:
        parse_config({"searcher": {"name": "samos"}})
    assert info.value.problems == (
        "config: searcher: searcher 'samos' (MONAS) needs space.name: multipath and an alignment dataset "
        "(faces3d, aflw2000), got space 'global', dataset 'digits'",
    )
    with pytest.raises(UserError, match="searcher 'macro_micro' needs space.name: global"):
        parse_config({"searcher": {"name": "macro_micro"}, "space": {"name": "multipath"}, "data": {"dataset": "faces3d"}})


def test_alignment_sections_are_validated_with_their_own_keys():
    raw = {"searcher": {"name": "samos"}, "space": {"name": "multipath", "layers": 1}, "data": {"dataset": "faces3d", "imge_size": 3}}
    with pytest.raises(UserError) as info:
        parse_config(raw)
    assert any("data.imge_size: unknown key; valid keys: dataset, path, image_size" in p for p in info.value.problems)
    assert any(p.startswith("config: space.layers: input should be greater than or equal to 2") for p in info.value.problems)
    config = parse_config({"searcher": {"name": "samos"}, "space": {"name": "multipath"}, "data": {"dataset": "faces3d"}})
    assert (config.metric, config.mode) == ("val_nme", "min")
